//! `test_sleep`: holds its worker for `ms` milliseconds. Compiled only with the `test-support`
//! feature, which the test suite enables and release builds never do; it lets the tests fill
//! the queue and reach the timeout with a real server.

use super::{Action, ActionKind, Outcome, Plan};
use crate::event::Event;
use crate::rules::schema::Fields;
use crate::rules::{ActionDef, Diagnostics};

/// The `test_sleep` action type.
pub struct TestSleep;

#[derive(Debug)]
struct Sleep {
    ms: u64,
}

impl ActionKind for TestSleep {
    fn type_name(&self) -> &'static str {
        "test_sleep"
    }

    fn compile(&self, def: &ActionDef, diags: &mut Diagnostics) -> Option<Box<dyn Action>> {
        let params = def.params_node.as_ref()?;
        let fields = Fields::new(params, "test_sleep params", &["ms"], diags)?;
        let ms = fields.get("ms").and_then(|n| n.scalar()).and_then(|(t, _)| t.parse().ok());
        if ms.is_none() {
            diags.error(params.pos, "test_sleep needs `ms`, a whole number");
        }
        Some(Box::new(Sleep { ms: ms? }))
    }
}

impl Action for Sleep {
    fn plan(&self, _facts: &crate::facts::Facts<'_>) -> Plan {
        let nap = || std::thread::sleep(std::time::Duration::from_millis(self.ms));
        // Inside the service, hand this thread's other tasks to another thread while sleeping,
        // so a sleeping event holds its evaluation slot without stalling the HTTP server.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(nap)
            }
            _ => nap(),
        }
        Plan::Nothing
    }

    fn message(&self, _outcome: &Outcome, _event: &Event) -> String {
        format!("slept {} ms", self.ms)
    }

    fn blocks(&self) -> bool {
        true
    }
}
