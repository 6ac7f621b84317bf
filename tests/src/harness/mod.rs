//! Pods as network namespaces, processes, and cleanup.
