//! A client of the collector's own API over its Unix socket: what
//! `config-access-collector report` uses to ask the running agent (for
//! example through `kubectl exec` into its pod).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::ErrorBody;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("starting the client runtime")]
    Runtime(#[source] std::io::Error),
    #[error("connecting to the API socket {path} (is the collector running, and is api_socket this path?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP exchange over {path} failed")]
    Exchange {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },
    #[error("GET {request} answered {status}: {message}")]
    Refused {
        request: String,
        status: u16,
        message: String,
    },
    #[error("GET {request}: the answer is not the expected JSON")]
    Decode {
        request: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `GET request` (a path such as `/v1/usage/unread`) on the API socket
/// `socket`, its JSON answer decoded.
pub fn get_json<T: DeserializeOwned>(socket: &Path, request: &str) -> Result<T, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    let (status, body) = runtime.block_on(get(socket, request))?;
    if status != 200 {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(ClientError::Refused {
            request: request.to_string(),
            status,
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
        request: request.to_string(),
        source,
    })
}

/// The status and body of `GET request` over the socket.
async fn get(socket: &Path, request: &str) -> Result<(u16, Bytes), ClientError> {
    let path = socket.to_path_buf();
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.clone(),
            source,
        })?;
    let exchange = |source| ClientError::Exchange {
        path: path.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange)?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(request)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Refused {
            request: request.to_string(),
            status: 0,
            message: e.to_string(),
        })?;
    let res = sender.send_request(req).await.map_err(exchange)?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(exchange)?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}
