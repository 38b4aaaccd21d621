//! Sending encoded OTLP log requests to the receiver: over gRPC (tonic; the
//! request bytes go into the gRPC frame as they are) or HTTP/protobuf
//! (reqwest's blocking client, as the OpenTelemetry SDK does).
//!
//! What the SDK's exporter reads from the environment is read here too:
//! `OTEL_EXPORTER_OTLP_HEADERS` (merged over the configured headers) and
//! `OTEL_EXPORTER_OTLP_COMPRESSION` (`gzip`), each under its
//! `OTEL_EXPORTER_OTLP_LOGS_*` variant. A failed request is retried with
//! exponential backoff while the error is one OTLP calls transient (gRPC
//! `UNAVAILABLE`, HTTP 429, 502, 503, 504, a connection error), all within
//! one request timeout.

use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::{Buf as _, BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// gRPC method of OTLP log export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// Retries of one request at most, and the first backoff (doubled each time).
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid OTLP endpoint {0:?}")]
    Endpoint(String),
    #[error("OTLP TLS settings")]
    Tls(#[source] tonic::transport::Error),
    #[error("OTLP HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot start a thread for the OTLP HTTP client")]
    Thread(#[source] std::io::Error),
    #[error("unsupported OTLP compression {0:?} (supported: gzip, none)")]
    Compression(String),
    #[error("gRPC status {0:?}")]
    Grpc(tonic::Code),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("HTTP request")]
    Http(#[source] reqwest::Error),
    #[error("compressing the request")]
    Gzip(#[source] std::io::Error),
    #[error("timed out")]
    Timeout,
}

impl ExportError {
    /// Whether OTLP calls the error transient (worth a retry).
    fn transient(&self) -> bool {
        match self {
            ExportError::Grpc(code) => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
                    | tonic::Code::OutOfRange
                    | tonic::Code::DataLoss
            ),
            ExportError::Status(s) => matches!(s, 429 | 502 | 503 | 504),
            ExportError::Http(e) => e.is_connect() || e.is_request(),
            _ => false,
        }
    }
}

/// Headers of `OTEL_EXPORTER_OTLP_LOGS_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`.
fn env_headers() -> HeaderMap {
    [
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok())
    .map_or_else(HeaderMap::new, |raw| parse_headers(&raw))
}

/// Headers in the `OTEL_EXPORTER_OTLP_HEADERS` format (`k1=v1,k2=v2`, values
/// percent-decoded), as the SDK reads them; malformed pairs are skipped.
fn parse_headers(raw: &str) -> HeaderMap {
    raw.split_terminator(',')
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .ok()?;
            Some((
                HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                HeaderValue::from_str(&v).ok()?,
            ))
        })
        .collect()
}

/// Whether requests are gzipped: `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION`, else
/// `OTEL_EXPORTER_OTLP_COMPRESSION`.
fn env_gzip() -> Result<bool, ExportError> {
    let value = [
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok());
    match value.as_deref().map(str::trim) {
        None | Some("" | "none") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => Err(ExportError::Compression(other.to_string())),
    }
}

/// The configured headers with the environment's merged over them, and a
/// user agent unless one is set.
fn all_headers(configured: &HeaderMap) -> HeaderMap {
    let mut headers = configured.clone();
    headers.extend(env_headers());
    if !headers.contains_key(axum::http::header::USER_AGENT) {
        headers.insert(
            axum::http::header::USER_AGENT,
            HeaderValue::from_static(concat!(
                "config-access-collector/",
                env!("CARGO_PKG_VERSION")
            )),
        );
    }
    headers
}

/// Passes encoded requests through and decodes the response.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportLogsServiceResponse>, tonic::Status> {
        let resp = ExportLogsServiceResponse::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(Some(resp))
    }
}

#[derive(Debug, Clone)]
enum Transport {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: tonic::metadata::MetadataMap,
        runtime: tokio::runtime::Handle,
    },
    Http {
        client: reqwest::blocking::Client,
        url: String,
        headers: HeaderMap,
        gzip: bool,
    },
}

/// Sends encoded `ExportLogsServiceRequest`s to one receiver.
#[derive(Debug, Clone)]
pub struct LogSender {
    transport: Transport,
    timeout: Duration,
}

impl LogSender {
    /// A gRPC sender to `endpoint` (`http://` or `https://`, trust from the
    /// system's roots), its connection driven by `runtime`.
    pub fn grpc(
        endpoint: &str,
        headers: &HeaderMap,
        timeout: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, ExportError> {
        let gzip = env_gzip()?;
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|_| ExportError::Endpoint(endpoint.to_string()))?
            .timeout(timeout);
        if ep.uri().scheme_str() == Some("https") {
            ep = ep
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(ExportError::Tls)?;
        }
        let channel = {
            let _guard = runtime.enter();
            ep.connect_lazy()
        };
        let mut client = tonic::client::Grpc::new(channel);
        if gzip {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self {
            transport: Transport::Grpc {
                client,
                metadata: tonic::metadata::MetadataMap::from_headers(all_headers(headers)),
                runtime,
            },
            timeout,
        })
    }

    /// An HTTP/protobuf sender to `url` (the full `/v1/logs` URL).
    pub fn http(url: &str, headers: &HeaderMap, timeout: Duration) -> Result<Self, ExportError> {
        let gzip = env_gzip()?;
        axum::http::Uri::try_from(url).map_err(|_| ExportError::Endpoint(url.to_string()))?;
        // Built on a thread of its own: the blocking client must not be made
        // inside an async runtime, which the caller may be in.
        let client = std::thread::Builder::new()
            .name("otlp-http-init".into())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
            })
            .map_err(ExportError::Thread)?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
            .map_err(ExportError::Client)?;
        Ok(Self {
            transport: Transport::Http {
                client,
                url: url.to_string(),
                headers: all_headers(headers),
                gzip,
            },
            timeout,
        })
    }

    /// Sends one encoded request, retrying transient failures until the
    /// request timeout; returns how many records the receiver rejected
    /// (OTLP partial success).
    pub fn send(&mut self, request: Vec<u8>) -> Result<u64, ExportError> {
        let deadline = Instant::now() + self.timeout;
        let body = match &self.transport {
            Transport::Http { gzip: true, .. } => gzip(&request)?,
            _ => Bytes::from(request),
        };
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self.attempt(body.clone(), left);
            match result {
                Err(e) if e.transient() && retries < RETRIES => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left <= backoff {
                        return Err(e);
                    }
                    tracing::debug!("OTLP log export failed, retrying in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    retries += 1;
                }
                other => return other,
            }
        }
    }

    fn attempt(&mut self, body: Bytes, left: Duration) -> Result<u64, ExportError> {
        if left.is_zero() {
            return Err(ExportError::Timeout);
        }
        let resp = match &mut self.transport {
            Transport::Grpc {
                client,
                metadata,
                runtime,
            } => {
                let mut client = client.clone();
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = metadata.clone();
                let call = async move {
                    client
                        .ready()
                        .await
                        .map_err(|_| ExportError::Grpc(tonic::Code::Unavailable))?;
                    let path = axum::http::uri::PathAndQuery::from_static(GRPC_EXPORT);
                    client
                        .unary(req, path, RawCodec)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| ExportError::Grpc(s.code()))
                };
                runtime.block_on(async {
                    tokio::time::timeout(left, call)
                        .await
                        .unwrap_or(Err(ExportError::Timeout))
                })?
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut req = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(axum::http::header::CONTENT_TYPE, "application/x-protobuf")
                    .timeout(left)
                    .body(body);
                if *gzip {
                    req = req.header(axum::http::header::CONTENT_ENCODING, "gzip");
                }
                let resp = req.send().map_err(ExportError::Http)?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(ExportError::Status(status.as_u16()));
                }
                let bytes = resp.bytes().map_err(ExportError::Http)?;
                // A receiver may answer with an empty body; that is success.
                ExportLogsServiceResponse::decode(bytes).unwrap_or_default()
            }
        };
        let rejected = resp.partial_success.map_or(0, |p| {
            if p.rejected_log_records > 0 || !p.error_message.is_empty() {
                tracing::debug!(
                    rejected = p.rejected_log_records,
                    "OTLP receiver rejected part of a log export: {}",
                    p.error_message
                );
            }
            u64::try_from(p.rejected_log_records).unwrap_or(0)
        });
        Ok(rejected)
    }
}

fn gzip(data: &[u8]) -> Result<Bytes, ExportError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(data).map_err(ExportError::Gzip)?;
    Ok(Bytes::from(enc.finish().map_err(ExportError::Gzip)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_ones_otlp_retries() {
        assert!(ExportError::Grpc(tonic::Code::Unavailable).transient());
        assert!(!ExportError::Grpc(tonic::Code::InvalidArgument).transient());
        assert!(ExportError::Status(503).transient());
        assert!(!ExportError::Status(400).transient());
        assert!(!ExportError::Timeout.transient());
    }

    #[test]
    fn headers_parse_as_the_sdk_reads_them() {
        let h = parse_headers("api-key=a%20b, x-tenant = t1 ,broken,=v,");
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["api-key"], "a b");
        assert_eq!(h["x-tenant"], "t1");
    }

    #[test]
    fn gzip_round_trips() {
        let data = b"config access ".repeat(100);
        let packed = gzip(&data).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(packed.as_ref()), &mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
