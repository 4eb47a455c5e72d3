//! The host side of the plugin contract, generated from the one WIT file the guest SDK also
//! generates from (`guest-sdk/wit/plugin.wit`). Imports that wait (on the log, a watch, the
//! caller) are async, so a blocked guest holds no thread; the rest are plain calls.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "recipe",
    imports: {
        "conclave:plugin/kv": async,
        "conclave:plugin/lease": async,
        "conclave:plugin/watch": async,
        "conclave:plugin/call": async,
    },
    exports: { default: async },
});
