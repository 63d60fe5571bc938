//! Bearer tokens for an EKS cluster's API, made the way `aws eks get-token` makes them.
//!
//! A token is a presigned STS `GetCallerIdentity` URL: SigV4 in the query string, valid for
//! [`PRESIGNED_URL_EXPIRY`], with the cluster's name in the signed header [`CLUSTER_ID_HEADER`]
//! (so a token for one cluster is refused by another). The URL is base64url-encoded without
//! padding and prefixed [`TOKEN_PREFIX`]. The cluster's authenticator calls STS with it, learns
//! who signed it, and maps that identity to Kubernetes users through its access entries. Clients
//! treat a token as good for [`TOKEN_LIFETIME`], as the AWS CLI does.
//!
//! Signing is pure ([`token_at`]: fixed credentials and time in, token out); [`token`] adds the
//! credentials of the standard AWS chain (or the stack's profile) and the clock.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::aws::AwsTarget;

/// What every EKS token starts with.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The signed header naming the cluster the token is for.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// How long STS accepts the presigned URL (`X-Amz-Expires`).
pub const PRESIGNED_URL_EXPIRY: Duration = Duration::from_secs(60);
/// How long a client may use a token before asking for a new one (the AWS CLI's 14 minutes; the
/// authenticator accepts tokens for 15).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The AWS credential chain found nothing usable.
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    /// SigV4 refused the request (an unparsable URL or header).
    #[error("cannot sign the STS request: {0}")]
    Signing(String),
}

/// A bearer token and when clients should replace it. `Debug` never shows the token.
#[derive(Clone)]
pub struct EksToken {
    /// `k8s-aws-v1.<base64url(presigned URL)>`.
    pub token: String,
    /// When clients should ask for a new one.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for EksToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EksToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl EksToken {
    /// The token in the `client.authentication.k8s.io/v1beta1` ExecCredential format that kubectl
    /// and other clients read from an exec credential plugin.
    pub fn exec_credential(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "ExecCredential",
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "spec": {},
            "status": {
                "expirationTimestamp": self.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "token": self.token,
            }
        })
    }
}

/// The STS endpoint of a region (the authenticator accepts only STS hosts).
pub fn sts_host(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("sts.{region}.{domain}")
}

/// The presigned `GetCallerIdentity` URL for `cluster_name`, signed with `credentials` at `at`.
pub fn presigned_url(
    cluster_name: &str,
    region: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<String, TokenError> {
    let host = sts_host(region);
    let base = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGNED_URL_EXPIRY);
    let identity: Identity = credentials.clone().into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| TokenError::Signing(e.to_string()))?
        .into();
    let headers = [("host", host.as_str()), (CLUSTER_ID_HEADER, cluster_name)];
    let request = SignableRequest::new(
        "GET",
        base.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| TokenError::Signing(e.to_string()))?
        .into_parts();
    let mut url = base;
    for (name, value) in instructions.params() {
        url.push('&');
        url.push_str(&super::install::percent_encode(name));
        url.push('=');
        url.push_str(&super::install::percent_encode(value));
    }
    Ok(url)
}

/// A token for `cluster_name` from fixed credentials and time: pure, so tests are deterministic.
pub fn token_at(
    cluster_name: &str,
    region: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<EksToken, TokenError> {
    let url = presigned_url(cluster_name, region, credentials, at)?;
    Ok(EksToken {
        token: format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url)),
        expires_at: DateTime::<Utc>::from(at) + TOKEN_LIFETIME,
    })
}

/// The presigned URL inside a token, or `None` when it is not an EKS token.
pub fn url_of(token: &str) -> Option<String> {
    let encoded = token.strip_prefix(TOKEN_PREFIX)?;
    String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()
}

/// A token for `cluster_name` in the stack's region, signed now with the credentials the AWS
/// providers use (the stack's profile or the standard chain).
pub async fn token(aws: &AwsTarget, cluster_name: &str) -> Result<EksToken, TokenError> {
    let config = aws.load().await;
    let provider = config.credentials_provider().ok_or_else(|| {
        TokenError::Credentials("the AWS configuration has no credentials provider".to_owned())
    })?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| TokenError::Credentials(error_chain(&e)))?;
    token_at(cluster_name, &aws.region, &credentials, SystemTime::now())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-04T05:06:07Z.
    fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_600_767)
    }

    fn credentials(session_token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "fixed",
        )
    }

    /// The query parameters, percent-decoded.
    fn query(url: &str) -> Vec<(String, String)> {
        let (_, query) = url.split_once('?').expect("a query string");
        query
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').expect("name=value");
                (decode(name), decode(value))
            })
            .collect()
    }

    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("UTF-8")
    }

    fn param<'a>(query: &'a [(String, String)], name: &str) -> &'a str {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {query:?}"))
    }

    #[test]
    fn the_presigned_url_has_every_part_the_authenticator_checks() {
        let url = presigned_url(
            "stacksmith-prod",
            "eu-west-1",
            &credentials(None),
            fixed_time(),
        )
        .unwrap();
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?"),
            "{url}"
        );
        let query = query(&url);
        assert_eq!(param(&query, "Action"), "GetCallerIdentity");
        assert_eq!(param(&query, "Version"), "2011-06-15");
        assert_eq!(param(&query, "X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
        assert_eq!(param(&query, "X-Amz-Expires"), "60");
        assert_eq!(param(&query, "X-Amz-Date"), "20260304T050607Z");
        assert_eq!(
            param(&query, "X-Amz-Credential"),
            "AKIDEXAMPLE/20260304/eu-west-1/sts/aws4_request"
        );
        let signed: Vec<&str> = param(&query, "X-Amz-SignedHeaders").split(';').collect();
        assert!(signed.contains(&"host"), "{signed:?}");
        assert!(signed.contains(&CLUSTER_ID_HEADER), "{signed:?}");
        let signature = param(&query, "X-Amz-Signature");
        assert_eq!(signature.len(), 64, "{signature}");
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(query.iter().all(|(n, _)| n != "X-Amz-Security-Token"));
    }

    /// The URL botocore (what `aws eks get-token` runs) presigns for the same request,
    /// credentials and time, byte for byte.
    #[test]
    fn the_url_is_the_one_the_aws_cli_makes() {
        let url = presigned_url(
            "stacksmith-prod",
            "eu-west-1",
            &credentials(None),
            fixed_time(),
        )
        .unwrap();
        assert_eq!(
            url,
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20260304%2Feu-west-1%2Fsts%2Faws4_request\
             &X-Amz-Date=20260304T050607Z&X-Amz-Expires=60\
             &X-Amz-SignedHeaders=host%3Bx-k8s-aws-id\
             &X-Amz-Signature=a435866c7294279f7a43b2da4cd83470e3ab645eef12faebd91ba4a3604b6d41"
        );
    }

    #[test]
    fn signing_is_deterministic_and_depends_on_the_cluster() {
        let sign = |cluster: &str| {
            presigned_url(cluster, "us-east-1", &credentials(None), fixed_time()).unwrap()
        };
        assert_eq!(sign("a"), sign("a"));
        assert_ne!(sign("a"), sign("b"), "the cluster name is signed");
    }

    #[test]
    fn a_session_token_travels_in_the_query() {
        let url = presigned_url(
            "c",
            "us-east-1",
            &credentials(Some("session/token+value")),
            fixed_time(),
        )
        .unwrap();
        assert_eq!(
            param(&query(&url), "X-Amz-Security-Token"),
            "session/token+value"
        );
    }

    #[test]
    fn the_token_is_the_prefixed_unpadded_base64url_of_the_url() {
        let at = fixed_time();
        let token = token_at("stacksmith-prod", "us-west-2", &credentials(None), at).unwrap();
        let encoded = token.token.strip_prefix(TOKEN_PREFIX).expect("the prefix");
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url without padding: {encoded}"
        );
        let url = url_of(&token.token).expect("decodes");
        assert_eq!(
            url,
            presigned_url("stacksmith-prod", "us-west-2", &credentials(None), at).unwrap()
        );
        assert_eq!(
            token.expires_at,
            DateTime::<Utc>::from(at) + chrono::Duration::minutes(14)
        );
        assert_eq!(url_of("Bearer something"), None);
        assert!(
            !format!("{token:?}").contains(TOKEN_PREFIX),
            "Debug hides it"
        );
    }

    #[test]
    fn the_exec_credential_has_the_v1beta1_shape() {
        let token = token_at("c", "us-east-1", &credentials(None), fixed_time()).unwrap();
        let credential = token.exec_credential();
        assert_eq!(credential["kind"], "ExecCredential");
        assert_eq!(
            credential["apiVersion"],
            "client.authentication.k8s.io/v1beta1"
        );
        assert_eq!(credential["status"]["token"], token.token.as_str());
        assert_eq!(
            credential["status"]["expirationTimestamp"],
            "2026-03-04T05:20:07Z"
        );
    }

    #[test]
    fn china_regions_use_their_own_sts_domain() {
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
        assert_eq!(sts_host("us-east-1"), "sts.us-east-1.amazonaws.com");
    }
}
