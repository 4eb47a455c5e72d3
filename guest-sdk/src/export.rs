//! What a plugin exports: implement [`Plugin`] and name the type in [`export_plugin!`](crate::export_plugin).

use crate::bindings::exports::conclave::plugin::plugin as wit;
use crate::errors::Result;

pub use wit::MethodKind;

/// A plugin: its description and the one entry point every call goes through.
pub trait Plugin {
    /// Name, version and methods; the member reads it at deploy.
    fn metadata() -> Metadata;

    /// Serve one call of `method`: the answer of a unary method, or for a streaming one what to
    /// send after the messages [`emit`](crate::emit)ted (nothing when empty).
    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>>;
}

/// A plugin's description, built as `Metadata::new("name", "1").unary("get").streaming("watch")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub methods: Vec<(String, MethodKind)>,
}

impl Metadata {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Metadata { name: name.into(), version: version.into(), methods: Vec::new() }
    }

    pub fn method(mut self, name: impl Into<String>, kind: MethodKind) -> Self {
        self.methods.push((name.into(), kind));
        self
    }

    /// A method answered with one payload.
    pub fn unary(self, name: impl Into<String>) -> Self {
        self.method(name, MethodKind::Unary)
    }

    /// A method that sends messages with [`emit`](crate::emit) before it returns.
    pub fn streaming(self, name: impl Into<String>) -> Self {
        self.method(name, MethodKind::Streaming)
    }

    fn into_wire(self) -> wit::PluginMetadata {
        wit::PluginMetadata {
            name: self.name,
            version: self.version,
            methods: self.methods.into_iter().map(|(name, kind)| wit::Method { name, kind }).collect(),
        }
    }
}

impl<P: Plugin> wit::Guest for P {
    fn metadata() -> wit::PluginMetadata {
        P::metadata().into_wire()
    }

    fn handle(method: String, payload: Vec<u8>) -> std::result::Result<Vec<u8>, wit::Error> {
        P::handle(&method, payload).map_err(Into::into)
    }
}

/// Export a [`Plugin`] implementation as the component's `conclave:plugin/plugin`:
/// `conclave_guest::export_plugin!(MyPlugin);` once, at the crate root of a cdylib.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        $crate::bindings::export!($plugin with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lists_methods_in_order() {
        let wire = Metadata::new("counter", "1").unary("add").streaming("watch").into_wire();
        assert_eq!((wire.name.as_str(), wire.version.as_str()), ("counter", "1"));
        let methods: Vec<_> = wire.methods.iter().map(|m| (m.name.as_str(), m.kind)).collect();
        assert_eq!(methods, [("add", MethodKind::Unary), ("watch", MethodKind::Streaming)]);
    }
}
