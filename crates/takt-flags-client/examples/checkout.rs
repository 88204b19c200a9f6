//! A Rust service reading takt's flags in-process:
//!
//! ```sh
//! takt token create --scope flags --name checkout --project shop --env production
//! TAKT_SERVER=http://127.0.0.1:8080 TAKT_FLAGS_TOKEN=takt_… \
//!   cargo run -p takt-flags-client --example checkout -- user-42
//! ```
//!
//! It prints which checkout the user gets, then again each time the flags change (a
//! `takt flag set` or a push to the default branch), until Ctrl-C.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("TAKT_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("TAKT_FLAGS_TOKEN").map_err(|_| "set TAKT_FLAGS_TOKEN to a flags token")?;
    let user = std::env::args().nth(1).unwrap_or_else(|| "user-42".into());
    let flags = takt_flags_client::FlagsClient::connect(&server, &token).await?;
    let ctx = serde_json::json!({"targetingKey": user});
    let ctx = ctx.as_object().ok_or("a context is an object")?;
    let mut changes = flags.changes();
    loop {
        let r = flags.evaluate("new-checkout", ctx);
        println!(
            "{user}: new-checkout = {} ({:?}, variant {})",
            r.value.map_or("(code default)".to_string(), |v| v.to_string()),
            r.reason,
            r.variant.as_deref().unwrap_or("-")
        );
        tokio::select! {
            changed = changes.changed() => changed?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
