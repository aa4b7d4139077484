//! Reversals (`reverse_points`): what an earlier event awarded a member, taken back in whole or
//! in part (a refund), written once for every store over [`LedgerTx`].
//!
//! What can be taken is read from the member's entries, so no counter is kept: the original's
//! `award` entries, less its `expire` entries (an expired lot's entry names its award), less the
//! `reverse` entries that name it. The points come from the original's own open lots first
//! (pending ones included), then from what the member can spend, in spending order; what that
//! does not cover becomes the member's debt (`negative_balance: allow`, paid by later awards)
//! or is left uncollected (`deny`).

use serde_json::Value;

use super::tx::{LedgerTx, NewEntry, Original};
use super::{EntryKind, LedgerError, ReverseWrite, lots, rfc3339};
use crate::actions::reward_points::round_points;
use crate::actions::{Failure, Outcome, ReversalFailure};
use crate::event::Event;
use crate::expr::Program;
use crate::facts::Facts;
use crate::rules::loyalty::NegativeBalance;

/// Takes back, for the reversal event `event_id` (`refund`), the share of the original that
/// `write` names; answers the outcome. Writes nothing when it fails.
pub fn reverse<T: LedgerTx + ?Sized>(
    tx: &mut T,
    event_id: &str,
    refund: &Event,
    write: &ReverseWrite,
    now: i64,
) -> Result<Outcome, LedgerError> {
    let failed = |failure| Ok(Outcome::Failed(Failure::Reversal(failure)));
    let (actor, original_id) = (write.actor_id.as_str(), write.reversal.original_id.as_str());
    let original = tx.original(original_id)?.filter(|o| o.actor_id.as_deref() == Some(actor));
    let Some(original) = original else { return failed(ReversalFailure::OriginalNotFound) };
    let ratio = match &write.reversal.ratio {
        None => 1.0,
        Some(program) => match ratio(program, refund, original_id, &original) {
            Ok(ratio) => ratio,
            Err(failure) => return failed(failure),
        },
    };
    let reversible = tx.reversible(actor, original_id)?;
    let awarded = reversible.awarded - reversible.expired;
    let wanted = (round_points(ratio * awarded as f64) as i64).min(awarded - reversible.reversed);
    if wanted <= 0 {
        return failed(ReversalFailure::NothingToReverse);
    }
    let at = refund.time().as_microsecond();
    let book = lots::bring_up_to(tx, actor, at, now)?;
    let spendable = lots::spendable(tx, actor, book, at)?;
    let (from_original, of_it_spendable) = lots::take_from_source(tx, actor, original_id, wanted, at)?;
    let rest = wanted - from_original;
    let from_others = rest.min(spendable - of_it_spendable).max(0);
    if from_others > 0 {
        lots::take(tx, actor, from_others, at)?;
    }
    let short = rest - from_others;
    let (taken, uncollected) = match write.negative_balance {
        NegativeBalance::Allow => (wanted, 0),
        NegativeBalance::Deny => (wanted - short, short),
    };
    if taken == 0 {
        return failed(ReversalFailure::NothingToReverse);
    }
    if write.negative_balance == NegativeBalance::Allow && short > 0 {
        tx.set_debt(actor, book.debt + short)?;
    }
    tx.append(&NewEntry {
        actor_id: actor,
        event_id,
        action_id: &write.action_id,
        scenario_id: &write.scenario_id,
        points: -taken,
        kind: EntryKind::Reverse,
        reason: write.reason.as_deref(),
        created_at: now,
        dated_at: at,
        available_at: None,
        expires_at: None,
        reverses: Some(original_id),
    })?;
    Ok(Outcome::Reversed { taken, uncollected })
}

/// The ratio, evaluated on the reversal event with the original readable as `original`.
fn ratio(program: &Program, refund: &Event, original_id: &str, original: &Original) -> Result<f64, ReversalFailure> {
    let payload = original.payload.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok());
    let mut stored = serde_json::json!({
        "id": original_id,
        "type": original.event_type,
        "actor_id": original.actor_id,
        "occurred_at": rfc3339(original.occurred_at),
    });
    if let (Some(payload), Some(fields)) = (payload, stored.as_object_mut()) {
        fields.insert("payload".to_owned(), payload);
    }
    // What was stored decodes as it was accepted; were it not to, the original is not there.
    let original = Event::from_value(stored).map_err(|_| ReversalFailure::OriginalNotFound)?;
    let facts = Facts { original: Some(&original), ..Facts::of(refund) };
    match program.number_of(&facts) {
        Err(unknown) => Err(ReversalFailure::RatioUnknown(unknown)),
        Ok(x) if !(0.0..=1.0).contains(&x) => Err(ReversalFailure::RatioOutOfRange(x)),
        Ok(x) => Ok(x),
    }
}
