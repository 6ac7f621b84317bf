//! `mesh-echo client grpc`: calls `mesh.echo.v1.EchoService`, one JSON line per reply.

use std::collections::BTreeMap;
use std::time::Duration;

use ::http::header::{HeaderName, HeaderValue};
use ::http::Uri;
use futures::StreamExt as _;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{parse_duration, parse_header, ClientError, Sink};
use crate::echo::proto::echo::echo_service_client::EchoServiceClient;
use crate::echo::proto::echo::{EchoRequest, EchoResponse, StreamEchoRequest};

/// Flags of `mesh-echo client grpc`.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// `HOST:PORT` to connect to (plaintext h2c).
    pub target: String,
    /// `:authority` to send instead of HOST:PORT.
    #[arg(long)]
    pub authority: Option<String>,
    /// Message to send.
    #[arg(long, default_value = "hello")]
    pub message: String,
    /// Call StreamEcho asking for N replies instead of Echo.
    #[arg(long, value_name = "N", conflicts_with = "chat")]
    pub stream: Option<u32>,
    /// Call Chat sending N messages instead of Echo.
    #[arg(long, value_name = "N")]
    pub chat: Option<u32>,
    /// Number of calls, one after the other on one connection.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Request metadata `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Limit for connecting and for each call.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The gRPC code every call must end with.
    #[arg(long, default_value_t = 0)]
    pub expect_code: i32,
}

/// An `EchoResponse` as printed: metadata as name to values, padding as its length.
#[derive(Debug, serde::Serialize)]
struct Reply {
    message: String,
    name: String,
    version: String,
    namespace: String,
    hostname: String,
    protocol: String,
    method: String,
    authority: String,
    metadata: BTreeMap<String, Vec<String>>,
    peer: String,
    local: String,
    port: u32,
    index: u32,
    padding_len: usize,
}

impl From<EchoResponse> for Reply {
    fn from(r: EchoResponse) -> Self {
        let mut metadata: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in r.metadata {
            metadata.entry(h.name).or_default().push(h.value);
        }
        Reply {
            message: r.message,
            name: r.name,
            version: r.version,
            namespace: r.namespace,
            hostname: r.hostname,
            protocol: r.protocol,
            method: r.method,
            authority: r.authority,
            metadata,
            peer: r.peer,
            local: r.local,
            port: r.port,
            index: r.index,
            padding_len: r.padding.len(),
        }
    }
}

/// What one call produced.
struct Outcome {
    code: Code,
    message: String,
    metadata: BTreeMap<String, Vec<String>>,
    replies: Vec<EchoResponse>,
}

impl Outcome {
    fn failed(status: &Status) -> Self {
        Outcome {
            code: status.code(),
            message: status.message().to_string(),
            metadata: metadata_json(status.metadata()),
            replies: Vec::new(),
        }
    }
}

/// Makes `--count` calls and prints one line per reply (or per failed call). Returns whether
/// every call ended with `--expect-code` and, when it succeeded, got as many replies as asked.
pub async fn run(args: &GrpcArgs, sink: &mut Sink<'_>) -> Result<bool, ClientError> {
    let invalid = |reason: String| ClientError::Target {
        target: args.target.clone(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(format!("http://{}", args.target))
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    if let Some(authority) = &args.authority {
        let origin: Uri = format!("http://{authority}")
            .parse()
            .map_err(|_| invalid(format!("invalid authority {authority:?}")))?;
        endpoint = endpoint.origin(origin);
    }
    let rpc = match (args.stream, args.chat) {
        (Some(_), _) => "StreamEcho",
        (_, Some(_)) => "Chat",
        _ => "Echo",
    };
    let mut ok = true;
    let channel = match endpoint.connect().await {
        Ok(channel) => Some(channel),
        Err(e) => {
            let status = Status::unavailable(format!("connect: {e}"));
            print_failure(sink, rpc, 0, &Outcome::failed(&status))?;
            None
        }
    };
    let Some(channel) = channel else {
        return Ok(false);
    };
    let mut client = EchoServiceClient::new(channel);
    for call in 0..args.count {
        let outcome = one_call(&mut client, args).await;
        let expected = args.stream.or(args.chat).unwrap_or(1).max(1) as usize;
        if outcome.code != Code::from_i32(args.expect_code)
            || (outcome.code == Code::Ok && outcome.replies.len() != expected)
        {
            ok = false;
        }
        if outcome.replies.is_empty() {
            print_failure(sink, rpc, call, &outcome)?;
        }
        for reply in &outcome.replies {
            let line = serde_json::json!({
                "rpc": rpc,
                "call": call,
                "code": outcome.code as i32,
                "message": outcome.message,
                "metadata": outcome.metadata,
                "reply": Reply::from(reply.clone()),
            });
            sink(&line)?;
        }
    }
    Ok(ok)
}

fn print_failure(
    sink: &mut Sink<'_>,
    rpc: &str,
    call: u32,
    outcome: &Outcome,
) -> Result<(), ClientError> {
    sink(&serde_json::json!({
        "rpc": rpc,
        "call": call,
        "code": outcome.code as i32,
        "message": outcome.message,
        "metadata": outcome.metadata,
        "reply": null,
    }))
}

fn request<T>(args: &GrpcArgs, message: T) -> Request<T> {
    let mut req = Request::new(message);
    let mut headers = std::mem::take(req.metadata_mut()).into_headers();
    for (name, value) in &args.headers {
        headers.append(name.clone(), value.clone());
    }
    *req.metadata_mut() = MetadataMap::from_headers(headers);
    req
}

async fn one_call(client: &mut EchoServiceClient<Channel>, args: &GrpcArgs) -> Outcome {
    let message = args.message.clone();
    let result = if let Some(count) = args.stream {
        let req = request(
            args,
            StreamEchoRequest {
                message,
                count,
                interval_ms: 0,
            },
        );
        match client.stream_echo(req).await {
            Ok(response) => collect(response).await,
            Err(status) => Err(status),
        }
    } else if let Some(count) = args.chat {
        let messages: Vec<EchoRequest> = (0..count.max(1))
            .map(|i| EchoRequest {
                message: format!("{message} {i}"),
            })
            .collect();
        let req = request(args, futures::stream::iter(messages));
        match client.chat(req).await {
            Ok(response) => collect(response).await,
            Err(status) => Err(status),
        }
    } else {
        client
            .echo(request(args, EchoRequest { message }))
            .await
            .map(|response| {
                let metadata = metadata_json(response.metadata());
                (metadata, vec![response.into_inner()])
            })
    };
    match result {
        Ok((metadata, replies)) => Outcome {
            code: Code::Ok,
            message: String::new(),
            metadata,
            replies,
        },
        Err(status) => Outcome::failed(&status),
    }
}

type Collected = (BTreeMap<String, Vec<String>>, Vec<EchoResponse>);

async fn collect(
    response: tonic::Response<tonic::Streaming<EchoResponse>>,
) -> Result<Collected, Status> {
    let metadata = metadata_json(response.metadata());
    let mut stream = response.into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = stream.next().await {
        replies.push(reply?);
    }
    Ok((metadata, replies))
}

fn metadata_json(metadata: &MetadataMap) -> BTreeMap<String, Vec<String>> {
    super::headers_json(metadata.as_ref())
}
