//! Traffic capture: Istio's `istio-iptables` rules (`mesh-proxy init`).
