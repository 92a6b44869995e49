//! The values an allowed attribute may take, as ActiveMQ's Spring/XBean binding converts them.
//!
//! The allow-list alone let `advisorySupport="maybe"` through: the plan passed, the revision
//! reached the host, and the broker then failed to start on the conversion error, in the
//! maintenance window or under `apply_immediately`. Checking the value at plan time names the
//! attribute and the value instead, and nothing reaches a host.
//!
//! Each kind accepts what the broker accepts, no more and no less where that is cheap to know:
//! Spring's boolean editor (`true/false`, `on/off`, `yes/no`, `1/0`, any case), Java's `int`
//! and `long` (with Spring's `0x` hexadecimal), ActiveMQ's memory sizes (`64 mb`), and the
//! enumerations KahaDB upper-cases before `valueOf`. Attributes not listed here are text
//! (destination names, prefixes, selectors).

/// How one attribute's value is converted by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Long,
    Double,
    /// 0–100 (the share of the broker's memory limit for producers or consumers).
    Percent,
    /// Bytes, or a number with `b`, `kb`, `mb` or `gb` (ActiveMQ's `MemoryPropertyEditor`).
    Memory,
    Choice(&'static [&'static str]),
}

const BOOLS: &[&str] = &[
    "abortConnection",
    "advisoryForConsumed",
    "advisoryForDelivery",
    "advisoryForDiscardingMessages",
    "advisoryForFastProducers",
    "advisoryForSlowConsumers",
    "advisorySupport",
    "advisoryWhenFull",
    "allConsumersExclusiveByDefault",
    "allowTempAutoCreationOnSend",
    "alwaysRetroactive",
    "cacheTempDestinations",
    "cleanupOnStop",
    "concurrentSend",
    "concurrentStoreAndDispatchQueues",
    "copyMessage",
    "destinationPerDurableSubscriber",
    "doOptimzeMessageStorage",
    "dropAll",
    "dropTemporaryQueues",
    "dropTemporaryTopics",
    "enableAudit",
    "enableMessageExpirationOnActiveDurableSubs",
    "fallbackToDeadLetter",
    "forwardOnly",
    "futureOnly",
    "gcInactiveDestinations",
    "gcWithNetworkConsumers",
    "ignoreIdleConsumers",
    "ignoreNetworkConsumers",
    "immediatePriorityDispatch",
    "keepDurableSubsActive",
    "lazyDispatch",
    "local",
    "optimizedDispatch",
    "persistenceFlag",
    "persistJMSRedelivered",
    "populateJMSXUserID",
    "prioritizedMessages",
    "processExpired",
    "processNetworkMessages",
    "processNonPersistent",
    "producerFlowControl",
    "reduceMemoryFootprint",
    "rejectDurableConsumers",
    "rollbackOnlyOnAsyncException",
    "selectorAware",
    "sendAdvisoryIfNoConsumers",
    "sendFailIfNoSpace",
    "sendToDlqIfMaxRetriesExceeded",
    "splitSystemUsageForProducersConsumers",
    "strictOrderDispatch",
    "tempQueue",
    "tempTopic",
    "transactedSend",
    "useCache",
    "useCollisionAvoidance",
    "useConsumerPriority",
    "useExponentialBackOff",
    "usePrefetchExtension",
    "useQueueForQueueMessages",
    "useQueueForTopicMessages",
    "useSharedBuffer",
];

const INTS: &[&str] = &[
    "bucketCount",
    "cacheSize",
    "consumersBeforeDispatchStarts",
    "cursorMemoryHighWaterMark",
    "evictExpiredMessagesHighWatermark",
    "indexWriteBatchSize",
    "limit",
    "maxAuditDepth",
    "maxBrowsePageSize",
    "maxExpirePageSize",
    "maxPageSize",
    "maxProducersToAudit",
    "maxPurgedDestinationsPerSweep",
    "maximumRedeliveries",
    "maximumSize",
    "optimizeMessageStoreInFlightLimit",
    "queuePrefetch",
    "schedulePeriodForDestinationPurge",
    "storeUsageHighWaterMark",
    "timeBeforeDispatchStarts",
    "timeBeforePurgeTempDestinations",
    "topicPrefetch",
];

const LONGS: &[&str] = &[
    "blockedProducerWarningInterval",
    "checkPeriod",
    "checkpointInterval",
    "cleanupInterval",
    "expiration",
    "expireMessagesPeriod",
    "inactiveTimeoutBeforeGC",
    "inactiveTimoutBeforeGC",
    "initialRedeliveryDelay",
    "journalDiskSyncInterval",
    "maxSlowCount",
    "maxSlowDuration",
    "maxTimeSinceLastAck",
    "maximumRedeliveryDelay",
    "minimumMessageSize",
    "offlineDurableSubscriberTaskSchedule",
    "offlineDurableSubscriberTimeout",
    "recoverDuration",
    "redeliveryDelay",
    "reportInterval",
    "sendFailIfNoSpaceAfterTimeout",
    "ttlCeiling",
    "zeroExpirationOverride",
];

fn kind(attribute: &str) -> Option<Kind> {
    Some(match attribute {
        a if BOOLS.contains(&a) => Kind::Bool,
        a if INTS.contains(&a) => Kind::Int,
        a if LONGS.contains(&a) => Kind::Long,
        "backOffMultiplier" | "multiplier" => Kind::Double,
        "consumerSystemUsagePortion" | "producerSystemUsagePortion" => Kind::Percent,
        "memoryLimit" => Kind::Memory,
        "journalDiskSyncStrategy" => Kind::Choice(&["always", "periodic", "never"]),
        "preallocationStrategy" => {
            Kind::Choice(&["sparse_file", "os_kernel_copy", "zeros", "chunked_zeros"])
        }
        _ => return None,
    })
}

/// Checks `value` of `attribute` on the element at `path`; the error names all three.
pub fn check(path: &str, attribute: &str, value: &str) -> Result<(), String> {
    let Some(kind) = kind(attribute) else {
        return Ok(());
    };
    let v = value.trim();
    let wanted = match kind {
        Kind::Bool => (!is_bool(v)).then(|| "true or false".to_string()),
        Kind::Int => integer(v)
            .filter(|n| i32::try_from(*n).is_ok())
            .is_none()
            .then(|| format!("a whole number from {} to {}", i32::MIN, i32::MAX)),
        Kind::Long => integer(v)
            .is_none()
            .then(|| "a whole number (Java long)".to_string()),
        Kind::Double => (!v.parse::<f64>().is_ok_and(f64::is_finite)).then(|| "a number".into()),
        Kind::Percent => integer(v)
            .filter(|n| (0..=100).contains(n))
            .is_none()
            .then(|| "a percentage from 0 to 100".to_string()),
        Kind::Memory => (!is_memory(v))
            .then(|| "a size in bytes, or a number with b, kb, mb or gb (\"64 mb\")".to_string()),
        Kind::Choice(choices) => (!choices.iter().any(|c| c.eq_ignore_ascii_case(v)))
            .then(|| format!("one of {}", choices.join(", "))),
    };
    match wanted {
        None => Ok(()),
        Some(wanted) => Err(format!(
            "attribute {attribute}={value:?} of <{path}> must be {wanted}"
        )),
    }
}

/// Spring's `CustomBooleanEditor`.
fn is_bool(v: &str) -> bool {
    ["true", "false", "on", "off", "yes", "no", "1", "0"]
        .iter()
        .any(|b| b.eq_ignore_ascii_case(v))
}

/// A Java integer literal as Spring's `NumberUtils` decodes it: decimal with a sign, or `0x` hex.
fn integer(v: &str) -> Option<i64> {
    let (negative, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .or_else(|| digits.strip_prefix('#'))
    {
        Some(hex) if !hex.is_empty() => i64::from_str_radix(hex, 16).ok()?,
        Some(_) => return None,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<i64>().ok()?
        }
        None => return None,
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn is_memory(v: &str) -> bool {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || v[..digits].parse::<i64>().is_err() {
        return false;
    }
    let unit = v[digits..].trim();
    ["", "b", "k", "kb", "m", "mb", "g", "gb"]
        .iter()
        .any(|u| u.eq_ignore_ascii_case(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_spring_reads_them() {
        for ok in ["true", "FALSE", "on", "No", "1", " yes "] {
            assert!(check("broker", "advisorySupport", ok).is_ok(), "{ok}");
        }
        let e = check("broker", "advisorySupport", "maybe").unwrap_err();
        assert_eq!(
            e,
            "attribute advisorySupport=\"maybe\" of <broker> must be true or false"
        );
    }

    #[test]
    fn numbers_within_java_ranges() {
        let p = "broker/destinationPolicy/policyMap/policyEntries/policyEntry";
        assert!(check(p, "queuePrefetch", "1000").is_ok());
        assert!(check(p, "queuePrefetch", "0x10").is_ok());
        assert!(check(p, "maxPageSize", "-1").is_ok());
        assert!(check(p, "queuePrefetch", "10.5").is_err());
        assert!(check(p, "queuePrefetch", "3000000000")
            .unwrap_err()
            .contains("queuePrefetch=\"3000000000\""));
        assert!(check(p, "expireMessagesPeriod", "3000000000").is_ok());
        assert!(check(p, "expireMessagesPeriod", "30s").is_err());
        assert!(check("x", "backOffMultiplier", "2.5").is_ok());
        assert!(check("x", "backOffMultiplier", "NaN").is_err());
        assert!(check("broker", "producerSystemUsagePortion", "60").is_ok());
        assert!(check("broker", "producerSystemUsagePortion", "160")
            .unwrap_err()
            .contains("from 0 to 100"));
    }

    #[test]
    fn memory_sizes_and_choices() {
        let p = "broker/destinationPolicy/policyMap/policyEntries/policyEntry";
        for ok in ["1048576", "64 mb", "64MB", "1gb", "512 k"] {
            assert!(check(p, "memoryLimit", ok).is_ok(), "{ok}");
        }
        for bad in ["lots", "mb", "64 tb", "-1 mb"] {
            assert!(check(p, "memoryLimit", bad).is_err(), "{bad}");
        }
        let k = "broker/persistenceAdapter/kahaDB";
        assert!(check(k, "journalDiskSyncStrategy", "PERIODIC").is_ok());
        assert!(check(k, "journalDiskSyncStrategy", "sometimes")
            .unwrap_err()
            .contains("one of always, periodic, never"));
        assert!(check(k, "preallocationStrategy", "zeros").is_ok());
    }

    /// Every allowed attribute is either typed here or known to be text, so a newly allowed
    /// attribute cannot skip its check unnoticed.
    #[test]
    fn every_allowed_attribute_has_a_kind_or_is_text() {
        const TEXT: &[&str] = &[
            "deadLetterQueue",
            "dropOnly",
            "name",
            "physicalName",
            "postfix",
            "prefix",
            "propertyName",
            "queue",
            "queuePrefix",
            "queueSuffix",
            "selector",
            "topic",
            "topicPrefix",
            "topicSuffix",
        ];
        let all = super::super::BROKER_ATTRIBUTES
            .iter()
            .chain(super::super::ELEMENTS.iter().flat_map(|(_, a, _)| a.iter()));
        for a in all {
            assert!(
                kind(a).is_some() != TEXT.contains(a),
                "{a}: typed and text, or neither"
            );
        }
    }

    #[test]
    fn text_attributes_take_anything() {
        assert!(check("x/queue", "physicalName", "orders.>").is_ok());
        assert!(check("x/policyEntry", "queue", ">").is_ok());
    }
}
