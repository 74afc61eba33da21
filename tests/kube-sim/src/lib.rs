//! kube-sim (placeholder doc, rewritten below)
pub mod builders;
pub mod cluster;
pub mod lifecycle;
pub mod resource;
pub mod selector;
pub mod server;
pub mod store;
mod watch;

pub use builders::{ContainerTemplate, NodeTemplate, PodTemplate, PvcTemplate};
pub use cluster::{Cluster, ClusterError};
pub use lifecycle::PodOutcome;
pub use resource::ResourceKind;
pub use server::{KubeSim, RequestCounts, SimConfig, SimError, Verb};
