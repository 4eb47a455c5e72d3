//! A component of the `conclave:plugin/recipe` world whose exports are written by hand in the
//! canonical ABI instead of by `export!`: `metadata` is valid (name "bad-output", version "1",
//! one unary method "handle-bad"), but every `handle` answers `ok(list)` with a list that
//! starts far outside linear memory, so the host cannot lift it.

wit_bindgen::generate!({ path: "../../../guest-sdk/wit", world: "recipe" });

const SECTION_LEN: usize = include!(concat!(env!("OUT_DIR"), "/recipe-component-type.len"));

/// The world with its exports, which the linker otherwise would not know this module has
/// (see build.rs).
#[unsafe(link_section = "component-type:bad-output:recipe")]
#[used]
static RECIPE_COMPONENT_TYPE: [u8; SECTION_LEN] =
    *include_bytes!(concat!(env!("OUT_DIR"), "/recipe-component-type.bin"));

/// A string or list in the canonical ABI on wasm32: pointer and length.
#[repr(C)]
struct Slice {
    ptr: u32,
    len: u32,
}

impl Slice {
    fn of(bytes: &'static [u8]) -> Self {
        Slice { ptr: bytes.as_ptr() as u32, len: bytes.len() as u32 }
    }
}

/// `record method { name: string, kind: method-kind }`: 12 bytes, align 4.
#[repr(C)]
struct Method {
    name: Slice,
    kind: u8,
}

/// `record plugin-metadata { name, version: string, methods: list<method> }`.
#[repr(C)]
struct PluginMetadata {
    name: Slice,
    version: Slice,
    methods: Slice,
}

/// `result<list<u8>, error>`: a discriminant byte, then the payload at offset 4.
#[repr(C)]
struct HandleResult {
    discriminant: u8,
    list: Slice,
}

#[unsafe(export_name = "conclave:plugin/plugin@0.1.0#metadata")]
extern "C" fn metadata() -> *mut PluginMetadata {
    let methods: &'static [Method] = Box::leak(Box::new([Method { name: Slice::of(b"handle-bad"), kind: 0 }]));
    let metadata = PluginMetadata {
        name: Slice::of(b"bad-output"),
        version: Slice::of(b"1"),
        methods: Slice { ptr: methods.as_ptr() as u32, len: methods.len() as u32 },
    };
    Box::leak(Box::new(metadata))
}

#[unsafe(export_name = "conclave:plugin/plugin@0.1.0#handle")]
extern "C" fn handle(
    _method: *mut u8,
    _method_len: usize,
    _payload: *mut u8,
    _payload_len: usize,
) -> *mut HandleResult {
    conclave::plugin::node::log(conclave::plugin::node::LogLevel::Info, "bad-output: answering out of bounds");
    let answer = HandleResult { discriminant: 0, list: Slice { ptr: 0xffff_0000, len: 0x1000 } };
    Box::leak(Box::new(answer))
}
