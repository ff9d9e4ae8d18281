//! TCP liveness defaults for every PostgreSQL connection: a peer that vanishes without a reset
//! (a network blackhole, a lost node) is noticed by TCP itself. Unless the URL says otherwise,
//! connections send keepalive probes after 30 s idle, every 10 s, and give up after 3
//! unanswered ones (`keepalives_idle`, `keepalives_interval`, `keepalives_retries`), and data
//! left unacknowledged for 30 s (`tcp_user_timeout`) breaks the connection. Each takes whole
//! seconds in the URL (tokio-postgres's reading; libpq's `tcp_user_timeout` is in
//! milliseconds). tokio-postgres's own default would wait two hours.

use std::time::Duration;

/// TCP settings applied unless the URL names them: a dead peer is noticed within about a
/// minute (idle: 30 s + 3 × 10 s of probes; with data outstanding: 30 s).
pub const LIVENESS_DEFAULTS: [(&str, Duration); 3] = [
    ("keepalives_idle", Duration::from_secs(30)),
    ("keepalives_interval", Duration::from_secs(10)),
    ("tcp_user_timeout", Duration::from_secs(30)),
];
/// Unanswered keepalive probes before the connection counts as dead, unless the URL says.
pub const KEEPALIVE_RETRIES: u32 = 3;

pub fn with_liveness_defaults(config: &mut tokio_postgres::Config, url: &str) {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let named = |key: &str| {
        query
            .split('&')
            .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == key)
    };
    for (key, value) in LIVENESS_DEFAULTS {
        if named(key) {
            continue;
        }
        match key {
            "keepalives_idle" => config.keepalives_idle(value),
            "keepalives_interval" => config.keepalives_interval(value),
            _ => config.tcp_user_timeout(value),
        };
    }
    if !named("keepalives_retries") {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn configured(url: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::from_str(url).expect("parses");
        with_liveness_defaults(&mut c, url);
        c
    }

    #[test]
    fn a_silent_peer_is_noticed_within_a_minute_unless_the_url_says_otherwise() {
        let c = configured("postgres://db/d");
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(c.get_keepalives_retries(), Some(3));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));

        let c =
            configured("postgres://db/d?keepalives_idle=5&tcp_user_timeout=2&keepalives_retries=1");
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(5));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(c.get_keepalives_retries(), Some(1));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(10)));
    }
}
