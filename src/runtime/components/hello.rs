//! `helloworld`: the hello component (a greeting the Lifecycle API can change at run time).

use std::sync::RwLock;

/// A greeting.
#[derive(Debug)]
pub struct Hello {
    greeting: RwLock<String>,
}

impl Hello {
    /// A component answering `greeting` (Layotto's default is `greeting`).
    pub fn new(greeting: Option<&str>) -> Self {
        Hello {
            greeting: RwLock::new(greeting.unwrap_or("greeting").to_string()),
        }
    }

    /// The answer to SayHello: the greeting, or `<greeting>, <name>` when a name is given.
    pub fn say_hello(&self, name: &str) -> String {
        let g = self.greeting.read().unwrap_or_else(|p| p.into_inner());
        if name.is_empty() {
            g.clone()
        } else {
            format!("{g}, {name}")
        }
    }

    /// Replace the greeting (Lifecycle `ApplyConfiguration` with metadata `hello`).
    pub fn set_greeting(&self, greeting: &str) {
        *self.greeting.write().unwrap_or_else(|p| p.into_inner()) = greeting.to_string();
    }
}
