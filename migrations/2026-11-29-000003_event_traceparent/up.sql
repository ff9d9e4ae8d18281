-- The W3C traceparent under which the event was ingested (`00-<trace id>-<span id>-<flags>`),
-- so the worker's delivery spans continue the producer's trace. NULL for events stored before
-- tracing, or ingested by a process with no tracing installed and no valid header.
ALTER TABLE events ADD COLUMN traceparent text;
