//! Whether a client's TLS choice and the server's inbound mode agree.

use super::decision::{ClientTls, Outcome};
use super::model::{InboundMode, TlsMode};

/// `in_mesh`: the endpoint has a sockmesh proxy; `server` is its mode on the target port (DISABLE
/// when it has none: it accepts whatever its application speaks).
pub fn outcome(
    client: &ClientTls,
    in_mesh: bool,
    server: InboundMode,
    identity: Option<&str>,
    app_tls: bool,
) -> Outcome {
    let fail = |why: String| Outcome {
        connects: false,
        reason: Some(why),
    };
    match client.mode {
        TlsMode::Disable if server == InboundMode::Strict => {
            fail("plaintext to a STRICT server".into())
        }
        TlsMode::Disable => Outcome {
            connects: true,
            reason: None,
        },
        TlsMode::IstioMutual if !in_mesh => {
            fail("ISTIO_MUTUAL to an endpoint outside the mesh".into())
        }
        TlsMode::IstioMutual if server == InboundMode::Disable => {
            fail("ISTIO_MUTUAL to a server that DISABLEs mTLS".into())
        }
        TlsMode::IstioMutual => match identity {
            Some(id)
                if !client.subject_alt_names.is_empty()
                    && !client.subject_alt_names.iter().any(|s| s == id) =>
            {
                fail(format!(
                    "server identity {id} is not in subjectAltNames {:?}",
                    client.subject_alt_names
                ))
            }
            _ => Outcome {
                connects: true,
                reason: None,
            },
        },
        TlsMode::Simple | TlsMode::Mutual if server == InboundMode::Strict => fail(format!(
            "{} origination to a STRICT server, which only accepts Istio mTLS",
            client.mode.as_str()
        )),
        TlsMode::Simple | TlsMode::Mutual if app_tls => fail(format!(
            "double TLS: {} origination on a port where the application already speaks TLS",
            client.mode.as_str()
        )),
        TlsMode::Simple | TlsMode::Mutual => Outcome {
            connects: true,
            reason: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::decision::ClientBasis;

    fn client(mode: TlsMode, sans: &[&str]) -> ClientTls {
        ClientTls {
            mode,
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            ..ClientTls::plaintext(ClientBasis::DestinationRule)
        }
    }

    /// (client mode, SANs, endpoint in mesh, server mode, app TLS, connects).
    type Case = (
        TlsMode,
        &'static [&'static str],
        bool,
        InboundMode,
        bool,
        bool,
    );

    #[test]
    fn table() {
        use InboundMode::{Permissive, Strict};
        use TlsMode::{IstioMutual, Mutual, Simple};
        let id = Some("spiffe://cluster.local/ns/a/sa/x");
        // (client mode, sans, in_mesh, server, app_tls, connects)
        let cases: &[Case] = &[
            (TlsMode::Disable, &[], true, Strict, false, false),
            (TlsMode::Disable, &[], true, Permissive, false, true),
            (
                TlsMode::Disable,
                &[],
                true,
                InboundMode::Disable,
                false,
                true,
            ),
            (
                TlsMode::Disable,
                &[],
                false,
                InboundMode::Disable,
                true,
                true,
            ),
            (IstioMutual, &[], true, Strict, false, true),
            (IstioMutual, &[], true, Permissive, true, true),
            (IstioMutual, &[], true, InboundMode::Disable, false, false),
            (IstioMutual, &[], false, InboundMode::Disable, false, false),
            (
                IstioMutual,
                &["spiffe://cluster.local/ns/a/sa/x"],
                true,
                Strict,
                false,
                true,
            ),
            (
                IstioMutual,
                &["spiffe://cluster.local/ns/b/sa/y"],
                true,
                Strict,
                false,
                false,
            ),
            (Simple, &[], true, Strict, false, false),
            (Simple, &[], false, InboundMode::Disable, false, true),
            (Simple, &[], false, InboundMode::Disable, true, false),
            (Mutual, &[], false, InboundMode::Disable, true, false),
            (Mutual, &[], true, Permissive, false, true),
        ];
        for (i, (mode, sans, in_mesh, server, app_tls, want)) in cases.iter().enumerate() {
            let got = outcome(&client(*mode, sans), *in_mesh, *server, id, *app_tls);
            assert_eq!(got.connects, *want, "case {i}: {got:?}");
            assert_eq!(got.reason.is_none(), *want, "case {i}");
        }
    }
}
