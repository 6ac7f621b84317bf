//! Istio's default TEXT access-log layout (`EnvoyTextLogFormat`, Istio 1.9 onwards):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
//!
//! on one line; a value that is not available is `-`, as Envoy writes it.

use std::fmt::{Display, Write as _};

use super::AccessLogEntry;

fn or_dash<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// One line (without the newline) in Istio's text layout.
pub fn render(e: &AccessLogEntry, out: &mut String) {
    let t: chrono::DateTime<chrono::Utc> = e.start_time.into();
    let _ = write!(
        out,
        "[{}] \"{} {} {}\" {} {} {} {} \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {} {}",
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        or_dash(e.method.as_deref()),
        or_dash(e.path.as_deref()),
        or_dash(e.protocol),
        e.response_code,
        e.response_flags_str(),
        or_dash(e.response_code_details.as_deref()),
        or_dash(e.connection_termination_details.as_deref()),
        or_dash(e.upstream_transport_failure_reason.as_deref()),
        e.bytes_received,
        e.bytes_sent,
        e.duration,
        or_dash(e.upstream_service_time.as_deref()),
        or_dash(e.x_forwarded_for.as_deref()),
        or_dash(e.user_agent.as_deref()),
        or_dash(e.request_id.as_deref()),
        or_dash(e.authority.as_deref()),
        or_dash(e.upstream_host),
        or_dash(e.upstream_cluster.as_deref()),
        or_dash(e.upstream_local_address),
        or_dash(e.downstream_local_address),
        or_dash(e.downstream_remote_address),
        or_dash(e.requested_server_name.as_deref()),
        or_dash(e.route_name.as_deref()),
    );
}
