//! A component of the world `other:thing/thing`: well formed, but not a Conclave plugin.

wit_bindgen::generate!({ path: "wit", world: "thing" });

struct Thing;

impl Guest for Thing {
    fn describe() -> String {
        "not a conclave plugin".to_string()
    }
}

export!(Thing);
