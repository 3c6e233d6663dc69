//! component-http: an XMPP external component (XEP-0114) that speaks HTTP.
#![forbid(unsafe_code)]
pub mod config;
pub mod limits;
pub mod xmpp;
