//! Error answers in each service's own protocol, with the codes and HTTP statuses AWS uses.
//!
//! | service | protocol | throttling | status |
//! | --- | --- | --- | --- |
//! | EC2 | ec2 query (`<Response><Errors>`) | `RequestLimitExceeded` "Request limit exceeded." | 503 |
//! | IAM, RDS, ElastiCache, STS | awsQuery (`<ErrorResponse>`, `Type` Sender) | `Throttling` "Rate exceeded" | 400 |
//! | EKS | restJson1 (`x-amzn-ErrorType`) | `ThrottlingException` "Rate exceeded" | 429 |
//! | CloudWatch Logs | awsJson1.1 (`__type`) | `ThrottlingException` "Rate exceeded" | 400 |
//!
//! Server errors: EC2 `InternalError` (500) / `Unavailable` (503); the query services
//! `InternalFailure` (500) / `ServiceUnavailable` (503); EKS `ServerException` (500) /
//! `ServiceUnavailableException` (503); Logs `ServiceUnavailableException`.

/// An HTTP answer: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// How a service encodes errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ec2Query,
    AwsQuery,
    RestJson,
    AwsJson,
}

pub fn protocol(service: &str) -> Protocol {
    match service {
        "ec2" => Protocol::Ec2Query,
        "eks" => Protocol::RestJson,
        "logs" => Protocol::AwsJson,
        _ => Protocol::AwsQuery,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An error `code` with `message` and HTTP `status`, shaped for `service`.
pub fn error(service: &str, status: u16, code: &str, message: &str, request_id: &str) -> Answer {
    match protocol(service) {
        Protocol::Ec2Query => Answer {
            status,
            headers: vec![
                ("content-type".into(), "text/xml;charset=UTF-8".into()),
                ("x-amzn-requestid".into(), request_id.into()),
            ],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
                 <Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                escape(code),
                escape(message)
            ),
        },
        Protocol::AwsQuery => Answer {
            status,
            headers: vec![
                ("content-type".into(), "text/xml".into()),
                ("x-amzn-requestid".into(), request_id.into()),
            ],
            body: format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message>\
                 </Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                if status >= 500 { "Receiver" } else { "Sender" },
                escape(code),
                escape(message)
            ),
        },
        Protocol::RestJson => Answer {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-amzn-errortype".into(), code.into()),
                ("x-amzn-requestid".into(), request_id.into()),
            ],
            body: serde_json::json!({ "message": message }).to_string(),
        },
        Protocol::AwsJson => Answer {
            status,
            headers: vec![
                ("content-type".into(), "application/x-amz-json-1.1".into()),
                ("x-amzn-requestid".into(), request_id.into()),
            ],
            body: serde_json::json!({ "__type": code, "message": message }).to_string(),
        },
    }
}

/// The throttling answer of `service`.
pub fn throttled(service: &str, request_id: &str) -> Answer {
    match protocol(service) {
        Protocol::Ec2Query => error(
            service,
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
            request_id,
        ),
        Protocol::AwsQuery => error(service, 400, "Throttling", "Rate exceeded", request_id),
        Protocol::RestJson => error(
            service,
            429,
            "ThrottlingException",
            "Rate exceeded",
            request_id,
        ),
        Protocol::AwsJson => error(
            service,
            400,
            "ThrottlingException",
            "Rate exceeded",
            request_id,
        ),
    }
}

/// A server error (500 or 503) of `service`.
pub fn server_error(service: &str, status: u16, request_id: &str) -> Answer {
    let unavailable = status == 503;
    let (code, message) = match (protocol(service), unavailable) {
        (Protocol::Ec2Query, false) => ("InternalError", "An internal error has occurred."),
        (Protocol::Ec2Query, true) => ("Unavailable", "The server is overloaded."),
        (Protocol::AwsQuery, false) => ("InternalFailure", "An internal error occurred."),
        (Protocol::AwsQuery, true) => ("ServiceUnavailable", "Service is unavailable."),
        (Protocol::RestJson, false) => ("ServerException", "An internal error occurred."),
        (Protocol::RestJson, true) => (
            "ServiceUnavailableException",
            "The service is unavailable. Backoff and retry the operation.",
        ),
        (Protocol::AwsJson, _) => (
            "ServiceUnavailableException",
            "The service cannot complete the request.",
        ),
    };
    error(service, status, code, message, request_id)
}

/// EC2's "not found" code for an id just created (eventual consistency), by the id's prefix.
pub fn ec2_not_found_code(id: &str) -> Option<&'static str> {
    let prefix = id.split('-').next()?;
    Some(match prefix {
        "vpc" => "InvalidVpcID.NotFound",
        "subnet" => "InvalidSubnetID.NotFound",
        "sg" => "InvalidGroup.NotFound",
        "rtb" => "InvalidRouteTableID.NotFound",
        "igw" => "InvalidInternetGatewayID.NotFound",
        "nat" => "NatGatewayNotFound",
        "eipalloc" => "InvalidAllocationID.NotFound",
        "fl" => "InvalidFlowLogId.NotFound",
        _ => return None,
    })
}
