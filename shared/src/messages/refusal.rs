//! Why a step said no: a decision with a stable code, stored and replayed.

use serde::{Deserialize, Serialize};

/// Why a step said no: a decision, stored and replayed to every later copy of the command.
///
/// On the wire: `{"code": "card_declined", "message": "card declined by the issuer"}`.
/// A reply stored before reasons were typed carried a bare string; it still reads, as
/// [`RefusalCode::Unspecified`], so an upgraded worker can replay what it stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RefusalWire")]
pub struct Refusal {
    /// What kind of "no"; stable across releases.
    pub code: RefusalCode,
    /// The details, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

crate::vocabulary::state_word! {
    /// The stable codes of a refusal. Only business decisions belong here: a database or
    /// network that failed is not a reason to refuse, whatever the delivery count.
    pub enum RefusalCode {
        /// Not enough stock for a line of the cart.
        OutOfStock,
        /// A line names a SKU the inventory does not sell.
        UnknownSku,
        /// The card was declined.
        CardDeclined,
        /// The card's account has too little money.
        InsufficientFunds,
        /// The card has expired.
        ExpiredCard,
        /// The confirmation could not be sent within its bound (fire-and-forget: recorded and
        /// counted, never a reason to fail the checkout).
        NotificationFailed,
        /// The order was refused.
        OrderRefused,
        /// The undo arrived before the action and left a tombstone: the late action is refused,
        /// so it can never take effect behind the saga's back.
        CancelledBeforeDone,
        /// The action's effect already exists without a stored reply (its record was cleared):
        /// refused, so that the saga undoes it rather than counting on it twice.
        AlreadyDone,
        /// The command could not be read (undecodable body, body and headers disagree). Only an
        /// action is refused so; an undo has no refusal.
        Undeliverable,
        /// A refusal stored before reasons had codes; its message is the old free text.
        Unspecified,
    }
}

/// What a refusal may look like when read: typed, or a bare string stored by an older release.
#[derive(Deserialize)]
#[serde(untagged)]
enum RefusalWire {
    Typed { code: RefusalCode, message: String },
    Legacy(String),
}

impl From<RefusalWire> for Refusal {
    fn from(wire: RefusalWire) -> Self {
        match wire {
            RefusalWire::Typed { code, message } => Refusal { code, message },
            RefusalWire::Legacy(message) => Refusal::new(RefusalCode::Unspecified, message),
        }
    }
}
