//! The mesh-echo test app.
