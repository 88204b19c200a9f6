//! Monitoring, pure: no I/O, no clock. Probing (HTTP, TCP, DNS, command) is an adapter
//! elsewhere; it fills a [`condition::Probe`] that these functions judge.
//!
//! - [`condition`]: Gatus's condition language — `[STATUS] == 200`, `[BODY].data[0].id == 1`,
//!   `len([BODY].items) > 0`, `has([BODY].error) == false`, `[BODY] == pat(*ok*)`,
//!   `[STATUS] == any(200, 201)`, `[RESPONSE_TIME] < 500`, `[CERTIFICATE_EXPIRATION] > 48h`,
//!   `[CONNECTED] == true`, `[IP] == 127.0.0.1`, `[DNS_RCODE] == NOERROR` — parsed once (an
//!   error names its column) and evaluated against a probe's result.
//! - [`threshold::Streak`]: `failure_threshold` consecutive failures take a check down,
//!   `success_threshold` consecutive successes bring it back up.
//! - [`incident`]: which incidents the checks' states open, join or resolve.
//! - [`drill`]: a disaster-recovery drill's figures from its load and checks.
//! - [`postmortem`]: a blameless draft of an incident, from the log around it.
//! - [`remedy`]: what remediation does about an incident, and when it pages on call.
//! - [`suspect`]: the deployments an incident most likely comes from, ranked.
//! - [`aggregate`]: results summed into hour and day buckets, retention, uptime bars.
//! - [`status`] and [`render`]: the public status page's model, its HTML and Atom feed.

pub mod aggregate;
pub mod condition;
pub mod drill;
pub mod incident;
pub mod maintenance;
pub mod postmortem;
pub mod remedy;
pub mod render;
pub mod status;
pub mod suspect;
pub mod threshold;
