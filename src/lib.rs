//! FluxFlow: a rule engine for loyalty programmes.
//!
//! Data flows through the modules in this order: [`event`] (what arrives, and [`facts`], what a
//! rule may read of it) → [`rules`] (the YAML rules file, read and checked) → [`expr`] (the
//! expression language) → [`graph`] (compiled scenarios, evaluation, trace) → [`actions`] (what a rule does) → [`result`] (what an event
//! did) → [`ledger`] (durable points, idempotency, batch jobs) → [`engine`] (queue, workers,
//! reload) → [`intake`] (the stream) and [`api`] (HTTP), run together by [`service`], behind [`access`] (API keys and scopes) → [`cli`] (the command line); [`logs`] writes the service's logs and
//! [`calendar`] (zones, schedules, periods) serves `rules`, `graph` and the ledger; [`suggest`] finds
//! the word a misspelt name meant.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod access;
pub mod actions;
pub mod api;
pub mod calendar;
pub mod cli;
pub mod engine;
pub mod event;
pub mod expr;
pub mod facts;
pub mod graph;
pub mod intake;
pub mod ledger;
pub mod logs;
pub mod result;
pub mod rules;
pub mod ruletest;
pub mod service;
pub mod suggest;
pub mod webhooks;
