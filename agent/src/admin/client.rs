//! The admin API's client: GET (and other methods, for tests) with hyper's HTTP/1 client
//! connection. The CLI's read-only commands and the admin tests use it.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode, header::HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no sockmesh agent is answering on {admin}: is it running? (sockmesh run ...)")]
    NotRunning {
        admin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent on {admin} did not answer {path} within {TIMEOUT:?}")]
    Timeout { admin: String, path: String },
    #[error("talking to the agent on {admin}: {source}")]
    Http {
        admin: String,
        #[source]
        source: hyper::Error,
    },
    #[error("invalid request: {0}")]
    Request(String),
    #[error("the agent on {admin} answered {path} with {status}: {body}")]
    Status {
        admin: String,
        path: String,
        status: StatusCode,
        body: String,
    },
}

/// Body of `GET path` on the admin API at `admin` (`host:port`); non-2xx answers are errors.
pub async fn get(admin: &str, path: &str) -> Result<String, ClientError> {
    let (status, body) = request(admin, Method::GET, path).await?;
    if !status.is_success() {
        return Err(ClientError::Status {
            admin: admin.to_owned(),
            path: path.to_owned(),
            status,
            body: body.trim().to_owned(),
        });
    }
    Ok(body)
}

/// Status and body of `method path` (path may carry a query) on the admin API at `admin`.
pub async fn request(
    admin: &str,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String), ClientError> {
    tokio::time::timeout(TIMEOUT, send(admin, method, path))
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                admin: admin.to_owned(),
                path: path.to_owned(),
            })
        })
}

async fn send(
    admin: &str,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String), ClientError> {
    let http = |source| ClientError::Http {
        admin: admin.to_owned(),
        source,
    };
    let stream = TcpStream::connect(admin)
        .await
        .map_err(|source| ClientError::NotRunning {
            admin: admin.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, admin)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
