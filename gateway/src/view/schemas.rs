//! The OpenAPI schemas of the state words the views carry: each lists its enum's one text
//! forms, so the document cannot name a word the code does not say.

use super::*;

/// A string that is one of `words` (or null).
pub(super) fn words(
    words: impl IntoIterator<Item = &'static str>,
    nullable: bool,
    about: &str,
) -> Object {
    let mut values: Vec<serde_json::Value> = words.into_iter().map(Into::into).collect();
    let schema_type = if nullable {
        values.push(serde_json::Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(values))
        .description(Some(about))
        .build()
}

pub(super) fn all<T: Copy + Into<&'static str> + 'static>(
    variants: &'static [T],
) -> Vec<&'static str> {
    variants.iter().map(|&v| v.into()).collect()
}

pub(super) fn state_schema() -> Object {
    let states = std::iter::once(CheckoutState::ACCEPTED).chain(all(SagaStatus::VARIANTS));
    words(
        states,
        false,
        "`accepted` until the saga starts, then the saga's status",
    )
}

pub(super) fn status_schema() -> Object {
    words(all(SagaStatus::VARIANTS), false, "The saga's status")
}

pub(super) fn kind_schema() -> Object {
    words(all(LifecycleKind::VARIANTS), false, "What happened")
}

pub(super) fn step_schema() -> Object {
    words(all(Step::VARIANTS), false, "A step of the checkout")
}

pub(super) fn step_or_null() -> Object {
    words(all(Step::VARIANTS), true, "A step of the checkout")
}

pub(super) fn phase_schema() -> Object {
    words(all(Phase::VARIANTS), false, "The step's action or its undo")
}

pub(super) fn phase_or_null() -> Object {
    words(all(Phase::VARIANTS), true, "The step's action or its undo")
}

pub(super) fn outcome_schema() -> Object {
    words(all(StepOutcome::VARIANTS), false, "How it ended")
}

pub(super) fn rejection_schema() -> Object {
    words(
        all(RejectionCode::VARIANTS),
        false,
        "Why the door refused the checkout (the `reason` of the same refusal's problem response)",
    )
}

pub(super) fn failure_code_schema() -> Object {
    let codes = RefusalCode::VARIANTS
        .iter()
        .map(|&code| FailureCode::Refused(code).as_str())
        .chain([FailureCode::Timeout.as_str()]);
    words(codes, false, "A step's refusal code, or `timeout`")
}
