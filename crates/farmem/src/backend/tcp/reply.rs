//! Answers from a memory server, decoded: owned replies and typed errors.

use farmem_proto::{ErrorCode, ErrorInfo, Header, QuotaKind, Response, ServerStats, VERSION};
use farmem_store::agent::AgentErrorCode;

use crate::backend::{BackendError, DisconnectCause, ProtocolError};

/// A decoded, owned answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Data(Vec<u8>),
    Many(Vec<Option<Vec<u8>>>),
    Stats(ServerStats),
}

/// Maps an error answer to a typed error.
pub(crate) fn error_from(addr: &str, e: &ErrorInfo<'_>) -> BackendError {
    let msg = e.message.to_string();
    match ErrorCode::from_code(e.code) {
        Some(ErrorCode::NotFound) => BackendError::NotFound(e.a),
        Some(ErrorCode::OutOfCapacity) => BackendError::OutOfCapacity {
            needed: e.a,
            available: e.b,
        },
        Some(ErrorCode::SizeMismatch) => BackendError::SizeMismatch {
            id: e.a,
            expected: e.b,
            actual: e.c,
        },
        Some(ErrorCode::TooLarge) => BackendError::TooLarge {
            size: e.a,
            limit: e.b,
        },
        Some(ErrorCode::ResponseTooLarge) => BackendError::ResponseTooLarge {
            size: e.a,
            limit: e.b,
        },
        Some(ErrorCode::QuotaExceeded) => match QuotaKind::from_code(e.a) {
            Some(QuotaKind::Rate) => BackendError::RateLimited {
                addr: addr.into(),
                limit: e.b,
                retry_after: std::time::Duration::from_millis(e.c),
            },
            Some(kind) => BackendError::QuotaExceeded {
                addr: addr.into(),
                kind,
                limit: e.b,
                wanted: e.c,
            },
            None => BackendError::Protocol(ProtocolError::ServerError {
                addr: addr.into(),
                code: e.code,
                message: msg,
            }),
        },
        Some(ErrorCode::AuthRefused) => BackendError::AuthRefused { addr: addr.into() },
        Some(ErrorCode::VersionMismatch) => BackendError::VersionMismatch {
            addr: addr.into(),
            client: VERSION,
            server: u16::try_from(e.a).unwrap_or(u16::MAX),
        },
        Some(ErrorCode::Compute) => BackendError::RemoteAgent {
            addr: addr.into(),
            code: AgentErrorCode::from_code(e.a),
            message: msg,
        },
        Some(ErrorCode::Refused | ErrorCode::ShuttingDown) => BackendError::Disconnected {
            addr: addr.into(),
            cause: DisconnectCause::Refused {
                code: e.code,
                message: msg,
            },
        },
        Some(ErrorCode::SessionRefused) => BackendError::ServerDown {
            addr: addr.into(),
            reason: format!("session lost: {msg}"),
        },
        _ => BackendError::Protocol(ProtocolError::ServerError {
            addr: addr.into(),
            code: e.code,
            message: msg,
        }),
    }
}

pub(crate) fn decode_reply(
    addr: &str,
    h: &Header,
    body: &[u8],
) -> Result<Result<Reply, BackendError>, ProtocolError> {
    let resp = Response::decode(h.op, h.flags, body)?;
    Ok(match resp {
        Response::Done => Ok(Reply::Done),
        Response::Data(d) => Ok(Reply::Data(d.to_vec())),
        Response::Many(list) => Ok(Reply::Many(
            list.iter().map(|o| o.map(<[u8]>::to_vec)).collect(),
        )),
        Response::Hello(_) => {
            return Err(ProtocolError::UnexpectedAnswer {
                answer: format!("hello answer to a request from {addr}"),
            });
        }
        Response::Stats(s) => Ok(Reply::Stats(s)),
        Response::Admin(_) => {
            return Err(ProtocolError::UnexpectedAnswer {
                answer: format!("admin answer to a request from {addr}"),
            });
        }
        Response::Error(e) => Err(error_from(addr, &e)),
    })
}
