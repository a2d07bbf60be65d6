//! Who is calling: the bearer token is checked by the Kubernetes API (TokenReview, audience
//! `istio-ca`), as istiod's Kubernetes JWT authenticator does. Only a service account may call.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::refusal::Refusal;
use crate::identity::ca_api::TOKEN_AUDIENCE;

const SA_PREFIX: &str = "system:serviceaccount:";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// An authenticated caller: a service account, and for a token bound to a pod, that pod and its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
    pub node: Option<String>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)?;
        if let Some(pod) = &self.pod {
            write!(f, " (pod {pod}")?;
            if let Some(node) = &self.node {
                write!(f, " on {node}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Bearer token of a request's `authorization` metadata.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, Refusal> {
    let value = metadata
        .get("authorization")
        .ok_or_else(|| Refusal::unauthenticated("no_token", "no authorization metadata"))?;
    let value = value
        .to_str()
        .map_err(|_| Refusal::unauthenticated("no_token", "authorization is not ASCII"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Refusal::unauthenticated("no_token", "authorization is not `Bearer <token>`")
        })
}

/// Reviews tokens through the Kubernetes API.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        TokenReviewer { client }
    }

    pub async fn review(&self, token: &str) -> Result<Caller, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                Refusal::unavailable("token_review_failed", format!("TokenReview: {e}"))
            })?;
        caller_of(&answer)
    }
}

/// The caller a TokenReview answer describes; anything short of an authenticated service account
/// with the `istio-ca` audience is refused.
pub fn caller_of(review: &TokenReview) -> Result<Caller, Refusal> {
    let unauthenticated = |why: String| Refusal::unauthenticated("token_rejected", why);
    let status = review
        .status
        .as_ref()
        .ok_or_else(|| unauthenticated("TokenReview has no status".into()))?;
    if status.authenticated != Some(true) {
        let error = status.error.clone().unwrap_or_default();
        return Err(unauthenticated(
            format!("token not authenticated {error}").trim_end().into(),
        ));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == TOKEN_AUDIENCE))
    {
        return Err(unauthenticated(format!(
            "token is not for audience {TOKEN_AUDIENCE} (got {:?})",
            status.audiences
        )));
    }
    let user = status
        .user
        .as_ref()
        .ok_or_else(|| unauthenticated("TokenReview has no user".into()))?;
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| unauthenticated(format!("{username:?} is not a service account")))?;
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .cloned()
    };
    Ok(Caller {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod: extra(POD_NAME_EXTRA),
        node: extra(NODE_NAME_EXTRA),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    fn review(authenticated: bool, username: &str, audiences: &[&str]) -> TokenReview {
        let extra = [
            (POD_NAME_EXTRA.to_string(), vec!["agent-x".to_string()]),
            (NODE_NAME_EXTRA.to_string(), vec!["node-a".to_string()]),
        ];
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                audiences: Some(audiences.iter().map(ToString::to_string).collect()),
                user: Some(UserInfo {
                    username: Some(username.into()),
                    extra: Some(extra.into()),
                    ..Default::default()
                }),
                error: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn bound_service_account_token_gives_pod_and_node() {
        let caller = caller_of(&review(
            true,
            "system:serviceaccount:sockmesh:agent",
            &["istio-ca"],
        ))
        .unwrap();
        assert_eq!(caller.namespace, "sockmesh");
        assert_eq!(caller.service_account, "agent");
        assert_eq!(caller.node.as_deref(), Some("node-a"));
        assert_eq!(caller.to_string(), "sockmesh/agent (pod agent-x on node-a)");
    }

    #[test]
    fn anything_else_is_refused() {
        for (r, why) in [
            (
                review(false, "system:serviceaccount:a:b", &["istio-ca"]),
                "not authenticated",
            ),
            (
                review(true, "system:serviceaccount:a:b", &["kubernetes"]),
                "audience",
            ),
            (
                review(true, "alice", &["istio-ca"]),
                "not a service account",
            ),
            (
                review(true, "system:serviceaccount:a", &["istio-ca"]),
                "not a service account",
            ),
        ] {
            let refusal = caller_of(&r).unwrap_err();
            assert!(refusal.detail.contains(why), "{refusal:?}");
            assert_eq!(refusal.code, tonic::Code::Unauthenticated);
        }
    }
}
