//! The integration suite: one test binary, one module per area.

mod auto_compaction;
mod cluster;
mod crash;
mod dump_log;
mod follower_writes;
mod kv_client;
mod kv_compat;
mod lease;
mod maintenance;
mod malformed;
mod membership;
mod peer_cluster_id;
mod plugin_cli;
mod plugin_cluster;
mod plugin_deploy;
mod plugin_limits;
mod quota;
mod recipe_config;
mod recipe_election;
mod recipe_lock;
mod recipe_registry;
mod snapshot;
mod snapshot_count;
mod watch;
mod watch_model;
mod watch_snapshot;
