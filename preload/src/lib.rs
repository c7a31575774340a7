//! libconductor_preload.so (stub; see issue 4).
