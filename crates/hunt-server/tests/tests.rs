//! Integration tests of `hunt serve`, through real HTTP on 127.0.0.1. One binary, one
//! module per area.

mod common;

mod auth;
mod catalog;
mod config;
mod escrow;
mod ingest;
mod limits;
mod memory_escrow;
mod notify;
mod openapi;
mod restart;
mod rewards;
