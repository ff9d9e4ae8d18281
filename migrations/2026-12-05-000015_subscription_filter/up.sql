-- Payload filters (issue #16): a subscription may select, among the events its patterns match,
-- those for which a SQL/JSON path predicate holds, evaluated at fan-out with jsonb_path_match.
--
-- `filter` is the text the operator wrote (what the API reads, writes and shows); `filter_path`
-- is its parsed form, kept by PostgreSQL itself: fan-out evaluates the stored binary jsonpath
-- rather than parsing the text for every (event, subscription) pair, and the row can never hold
-- a filter PostgreSQL cannot parse (the cast fails the write). The API validates first, so that
-- failure is not expected. Both NULL: no filter (every event the patterns match, as before).
--
-- Expand only: the previous release neither reads nor writes the columns, and its rows have no
-- filter.
ALTER TABLE subscriptions
    ADD COLUMN filter text CHECK (octet_length(filter) BETWEEN 1 AND 1024),
    ADD COLUMN filter_path jsonpath GENERATED ALWAYS AS (filter::jsonpath) STORED;
