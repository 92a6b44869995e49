//! ActiveMQ configuration data: a `<broker xmlns="http://activemq.apache.org/schema/core">`
//! document as Amazon MQ takes it, restricted to a subset of Amazon MQ's permitted elements and
//! attributes ("Elements permitted in Amazon MQ configurations").
//!
//! Left out, because FerryMQ renders them itself: `transportConnectors` and `networkConnectors`
//! (listeners), `authorizationPlugin` (from the users' groups), `loggingBrokerPlugin`
//! (`logs.audit`), the store's directory and lock, and `systemUsage`'s memory, store and temp
//! limits (from the instance type and the volume). Anything not listed is refused with the
//! element's path, so a typo never silently does nothing on the broker.

mod values;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

pub const CORE_NS: &str = "http://activemq.apache.org/schema/core";

/// `broker` attributes a configuration may set (Amazon MQ's list without those FerryMQ sets:
/// `persistent`, `schedulerSupport`, `deleteAllMessagesOnStartup`, thread priorities).
const BROKER_ATTRIBUTES: &[&str] = &[
    "advisorySupport",
    "allowTempAutoCreationOnSend",
    "cacheTempDestinations",
    "consumerSystemUsagePortion",
    "keepDurableSubsActive",
    "enableMessageExpirationOnActiveDurableSubs",
    "maxPurgedDestinationsPerSweep",
    "offlineDurableSubscriberTaskSchedule",
    "offlineDurableSubscriberTimeout",
    "populateJMSXUserID",
    "producerSystemUsagePortion",
    "rejectDurableConsumers",
    "rollbackOnlyOnAsyncException",
    "schedulePeriodForDestinationPurge",
    "splitSystemUsageForProducersConsumers",
    "timeBeforePurgeTempDestinations",
];

/// `broker`'s children a configuration may have.
const BROKER_CHILDREN: &[&str] = &[
    "destinationInterceptors",
    "destinationPolicy",
    "destinations",
    "persistenceAdapter",
    "plugins",
    "systemUsage",
];

/// Every other element: its attributes and its children. Elements are looked up by name
/// wherever they appear under an allowed parent.
const ELEMENTS: &[(&str, &[&str], &[&str])] = &[
    // <destinationPolicy><policyMap><policyEntries><policyEntry …/>
    ("destinationPolicy", &[], &["policyMap"]),
    (
        "policyMap",
        &[],
        &["policyMap", "policyEntries", "defaultEntry"],
    ),
    ("policyEntries", &[], &["policyEntry"]),
    ("defaultEntry", &[], &["policyEntry", "redeliveryPolicy"]),
    (
        "policyEntry",
        &[
            "queue",
            "topic",
            "tempQueue",
            "tempTopic",
            "advisoryForConsumed",
            "advisoryForDelivery",
            "advisoryForDiscardingMessages",
            "advisoryForFastProducers",
            "advisoryForSlowConsumers",
            "advisoryWhenFull",
            "allConsumersExclusiveByDefault",
            "alwaysRetroactive",
            "blockedProducerWarningInterval",
            "consumersBeforeDispatchStarts",
            "cursorMemoryHighWaterMark",
            "doOptimzeMessageStorage",
            "expireMessagesPeriod",
            "gcInactiveDestinations",
            "gcWithNetworkConsumers",
            "inactiveTimeoutBeforeGC",
            "inactiveTimoutBeforeGC",
            "lazyDispatch",
            "maxBrowsePageSize",
            "maxExpirePageSize",
            "maxPageSize",
            "memoryLimit",
            "minimumMessageSize",
            "optimizedDispatch",
            "optimizeMessageStoreInFlightLimit",
            "persistJMSRedelivered",
            "prioritizedMessages",
            "producerFlowControl",
            "queuePrefetch",
            "reduceMemoryFootprint",
            "sendAdvisoryIfNoConsumers",
            "storeUsageHighWaterMark",
            "strictOrderDispatch",
            "timeBeforeDispatchStarts",
            "topicPrefetch",
            "useCache",
            "useConsumerPriority",
            "usePrefetchExtension",
        ],
        &[
            "deadLetterStrategy",
            "dispatchPolicy",
            "messageEvictionStrategy",
            "messageGroupMapFactory",
            "pendingDurableSubscriberPolicy",
            "pendingMessageLimitStrategy",
            "pendingQueuePolicy",
            "pendingSubscriberPolicy",
            "slowConsumerStrategy",
            "subscriptionRecoveryPolicy",
        ],
    ),
    (
        "deadLetterStrategy",
        &[],
        &[
            "discarding",
            "individualDeadLetterStrategy",
            "sharedDeadLetterStrategy",
        ],
    ),
    (
        "discarding",
        &[
            "deadLetterQueue",
            "enableAudit",
            "expiration",
            "maxAuditDepth",
            "maxProducersToAudit",
            "processExpired",
            "processNonPersistent",
        ],
        &[],
    ),
    (
        "individualDeadLetterStrategy",
        &[
            "destinationPerDurableSubscriber",
            "enableAudit",
            "expiration",
            "maxAuditDepth",
            "maxProducersToAudit",
            "processExpired",
            "processNonPersistent",
            "queuePrefix",
            "queueSuffix",
            "topicPrefix",
            "topicSuffix",
            "useQueueForQueueMessages",
            "useQueueForTopicMessages",
        ],
        &[],
    ),
    (
        "sharedDeadLetterStrategy",
        &[
            "enableAudit",
            "expiration",
            "maxAuditDepth",
            "maxProducersToAudit",
            "processExpired",
            "processNonPersistent",
        ],
        &["deadLetterQueue"],
    ),
    ("deadLetterQueue", &[], &["queue", "topic"]),
    (
        "dispatchPolicy",
        &[],
        &[
            "priorityDispatchPolicy",
            "roundRobinDispatchPolicy",
            "simpleDispatchPolicy",
            "strictOrderDispatchPolicy",
        ],
    ),
    ("priorityDispatchPolicy", &[], &[]),
    ("roundRobinDispatchPolicy", &[], &[]),
    ("simpleDispatchPolicy", &[], &[]),
    ("strictOrderDispatchPolicy", &[], &[]),
    (
        "messageEvictionStrategy",
        &[],
        &[
            "oldestMessageEvictionStrategy",
            "oldestMessageWithLowestPriorityEvictionStrategy",
            "uniquePropertyMessageEvictionStrategy",
        ],
    ),
    (
        "oldestMessageEvictionStrategy",
        &["evictExpiredMessagesHighWatermark"],
        &[],
    ),
    (
        "oldestMessageWithLowestPriorityEvictionStrategy",
        &["evictExpiredMessagesHighWatermark"],
        &[],
    ),
    (
        "uniquePropertyMessageEvictionStrategy",
        &["evictExpiredMessagesHighWatermark", "propertyName"],
        &[],
    ),
    (
        "messageGroupMapFactory",
        &[],
        &[
            "cachedMessageGroupMapFactory",
            "messageGroupHashBucketFactory",
            "simpleMessageGroupMapFactory",
        ],
    ),
    ("cachedMessageGroupMapFactory", &["cacheSize"], &[]),
    (
        "messageGroupHashBucketFactory",
        &["bucketCount", "cacheSize"],
        &[],
    ),
    ("simpleMessageGroupMapFactory", &[], &[]),
    (
        "pendingDurableSubscriberPolicy",
        &[],
        &[
            "fileDurableSubscriberCursor",
            "storeDurableSubscriberCursor",
            "vmDurableCursor",
        ],
    ),
    ("fileDurableSubscriberCursor", &[], &[]),
    (
        "storeDurableSubscriberCursor",
        &["immediatePriorityDispatch", "useCache"],
        &[],
    ),
    ("vmDurableCursor", &[], &[]),
    (
        "pendingMessageLimitStrategy",
        &[],
        &[
            "constantPendingMessageLimitStrategy",
            "prefetchRatePendingMessageLimitStrategy",
        ],
    ),
    ("constantPendingMessageLimitStrategy", &["limit"], &[]),
    (
        "prefetchRatePendingMessageLimitStrategy",
        &["multiplier"],
        &[],
    ),
    (
        "pendingQueuePolicy",
        &[],
        &["fileQueueCursor", "storeCursor", "vmQueueCursor"],
    ),
    ("fileQueueCursor", &[], &[]),
    ("storeCursor", &[], &[]),
    ("vmQueueCursor", &[], &[]),
    ("pendingSubscriberPolicy", &[], &["fileCursor", "vmCursor"]),
    ("fileCursor", &[], &[]),
    ("vmCursor", &[], &[]),
    (
        "slowConsumerStrategy",
        &[],
        &["abortSlowAckConsumerStrategy", "abortSlowConsumerStrategy"],
    ),
    (
        "abortSlowAckConsumerStrategy",
        &[
            "abortConnection",
            "checkPeriod",
            "ignoreIdleConsumers",
            "ignoreNetworkConsumers",
            "maxSlowCount",
            "maxSlowDuration",
            "maxTimeSinceLastAck",
            "name",
        ],
        &[],
    ),
    (
        "abortSlowConsumerStrategy",
        &[
            "abortConnection",
            "checkPeriod",
            "ignoreNetworkConsumers",
            "maxSlowCount",
            "maxSlowDuration",
            "name",
        ],
        &[],
    ),
    (
        "subscriptionRecoveryPolicy",
        &[],
        &[
            "fixedCountSubscriptionRecoveryPolicy",
            "fixedSizedSubscriptionRecoveryPolicy",
            "lastImageSubscriptionRecoveryPolicy",
            "noSubscriptionRecoveryPolicy",
            "queryBasedSubscriptionRecoveryPolicy",
            "timedSubscriptionRecoveryPolicy",
        ],
    ),
    (
        "fixedCountSubscriptionRecoveryPolicy",
        &["maximumSize"],
        &[],
    ),
    (
        "fixedSizedSubscriptionRecoveryPolicy",
        &["maximumSize", "useSharedBuffer"],
        &[],
    ),
    ("lastImageSubscriptionRecoveryPolicy", &[], &[]),
    ("noSubscriptionRecoveryPolicy", &[], &[]),
    ("queryBasedSubscriptionRecoveryPolicy", &[], &[]),
    ("timedSubscriptionRecoveryPolicy", &["recoverDuration"], &[]),
    // <destinationInterceptors>: mirrored queues and virtual destinations.
    (
        "destinationInterceptors",
        &[],
        &["mirroredQueue", "virtualDestinationInterceptor"],
    ),
    ("mirroredQueue", &["copyMessage", "postfix", "prefix"], &[]),
    (
        "virtualDestinationInterceptor",
        &[],
        &["virtualDestinations"],
    ),
    (
        "virtualDestinations",
        &[],
        &["compositeQueue", "compositeTopic", "virtualTopic"],
    ),
    (
        "compositeQueue",
        &["concurrentSend", "copyMessage", "forwardOnly", "name"],
        &["forwardTo"],
    ),
    (
        "compositeTopic",
        &["concurrentSend", "copyMessage", "forwardOnly", "name"],
        &["forwardTo"],
    ),
    (
        "virtualTopic",
        &[
            "concurrentSend",
            "local",
            "name",
            "postfix",
            "prefix",
            "selectorAware",
            "transactedSend",
        ],
        &[],
    ),
    ("forwardTo", &[], &["filteredDestination", "queue", "topic"]),
    ("filteredDestination", &["queue", "selector", "topic"], &[]),
    // <destinations>: created at start.
    ("destinations", &[], &["queue", "topic"]),
    ("queue", &["physicalName"], &[]),
    ("topic", &["physicalName"], &[]),
    // <persistenceAdapter><kahaDB …/>: tuning attributes only (FerryMQ sets the directory
    // and the lock).
    ("persistenceAdapter", &[], &["kahaDB"]),
    (
        "kahaDB",
        &[
            "checkpointInterval",
            "cleanupInterval",
            "cleanupOnStop",
            "concurrentStoreAndDispatchQueues",
            "indexWriteBatchSize",
            "journalDiskSyncInterval",
            "journalDiskSyncStrategy",
            "preallocationStrategy",
        ],
        &[],
    ),
    // <plugins>
    (
        "plugins",
        &[],
        &[
            "discardingDLQBrokerPlugin",
            "forcePersistencyModeBrokerPlugin",
            "redeliveryPlugin",
            "statisticsBrokerPlugin",
            "timeStampingBrokerPlugin",
        ],
    ),
    (
        "discardingDLQBrokerPlugin",
        &[
            "dropAll",
            "dropOnly",
            "dropTemporaryQueues",
            "dropTemporaryTopics",
            "reportInterval",
        ],
        &[],
    ),
    (
        "forcePersistencyModeBrokerPlugin",
        &["persistenceFlag"],
        &[],
    ),
    (
        "redeliveryPlugin",
        &["fallbackToDeadLetter", "sendToDlqIfMaxRetriesExceeded"],
        &["redeliveryPolicyMap"],
    ),
    (
        "redeliveryPolicyMap",
        &[],
        &[
            "defaultEntry",
            "redeliveryPolicyEntries",
            "redeliveryPolicyMap",
        ],
    ),
    ("redeliveryPolicyEntries", &[], &["redeliveryPolicy"]),
    (
        "redeliveryPolicy",
        &[
            "backOffMultiplier",
            "initialRedeliveryDelay",
            "maximumRedeliveries",
            "maximumRedeliveryDelay",
            "queue",
            "redeliveryDelay",
            "tempQueue",
            "tempTopic",
            "topic",
            "useCollisionAvoidance",
            "useExponentialBackOff",
        ],
        &[],
    ),
    ("statisticsBrokerPlugin", &[], &[]),
    (
        "timeStampingBrokerPlugin",
        &[
            "futureOnly",
            "processNetworkMessages",
            "ttlCeiling",
            "zeroExpirationOverride",
        ],
        &[],
    ),
    // <systemUsage><systemUsage …/>: what to do when full, not the limits.
    (
        "systemUsage",
        &["sendFailIfNoSpace", "sendFailIfNoSpaceAfterTimeout"],
        &["systemUsage"],
    ),
];

/// One element of the configuration, attributes decoded, and its start tag as written (to be
/// written again unchanged into the rendered `activemq.xml`).
#[derive(Debug, Clone)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub start: BytesStart<'static>,
    pub children: Vec<Element>,
}

impl Element {
    /// The element as quick-xml events, for a writer to copy.
    pub fn events(&self) -> Vec<Event<'static>> {
        if self.children.is_empty() {
            return vec![Event::Empty(self.start.clone())];
        }
        let mut out = vec![Event::Start(self.start.clone())];
        for c in &self.children {
            out.extend(c.events());
        }
        out.push(Event::End(self.start.to_end().into_owned()));
        out
    }
}

/// What a configuration adds to the `activemq.xml` FerryMQ renders.
#[derive(Debug, Clone, Default)]
pub struct ActiveMqConfig {
    /// Attributes of `<broker>`.
    pub broker_attributes: Vec<(String, String)>,
    /// `destinationPolicy`, `destinationInterceptors`, `destinations`: copied into `<broker>`.
    pub sections: Vec<Element>,
    /// Children of `<plugins>`, besides FerryMQ's own (`statisticsBrokerPlugin`, which FerryMQ
    /// always runs for its metrics, is left out).
    pub plugins: Vec<Element>,
    /// Attributes added to FerryMQ's `<kahaDB>`.
    pub kahadb_attributes: Vec<(String, String)>,
    /// Attributes added to FerryMQ's inner `<systemUsage>`.
    pub system_usage_attributes: Vec<(String, String)>,
}

fn rules(name: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    ELEMENTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, a, c)| (*a, *c))
}

/// Parses and checks the data; the error names the offending element (by its path) or
/// attribute, or where the XML is malformed.
pub fn parse(data: &str) -> Result<ActiveMqConfig, String> {
    let root = tree(data)?;
    if root.name != "broker" {
        return Err(format!(
            "the root element is <{}>; an ActiveMQ configuration is a <broker xmlns=\"{CORE_NS}\"> element",
            root.name
        ));
    }
    let mut out = ActiveMqConfig::default();
    for (key, value) in &root.attributes {
        match key.as_str() {
            "xmlns" if value == CORE_NS => {}
            "xmlns" => {
                return Err(format!(
                    "<broker> has xmlns {value:?}; it must be {CORE_NS:?}"
                ))
            }
            k if BROKER_ATTRIBUTES.contains(&k) => {
                values::check("broker", k, value)?;
                out.broker_attributes.push((key.clone(), value.clone()))
            }
            k => {
                return Err(format!(
                    "attribute {k:?} of <broker> is not allowed in a FerryMQ configuration; allowed: {}",
                    BROKER_ATTRIBUTES.join(", ")
                ))
            }
        }
    }
    let mut seen = Vec::new();
    for child in &root.children {
        let path = format!("broker/{}", child.name);
        if !BROKER_CHILDREN.contains(&child.name.as_str()) {
            return Err(not_allowed(&path, "broker", BROKER_CHILDREN));
        }
        if seen.contains(&child.name) {
            return Err(format!("<{path}> appears twice"));
        }
        seen.push(child.name.clone());
        check(child, &path)?;
        match child.name.as_str() {
            "plugins" => out.plugins.extend(
                child
                    .children
                    .iter()
                    .filter(|p| p.name != "statisticsBrokerPlugin")
                    .cloned(),
            ),
            "persistenceAdapter" => {
                for k in &child.children {
                    out.kahadb_attributes.extend(k.attributes.iter().cloned());
                }
            }
            "systemUsage" => {
                if !child.attributes.is_empty() {
                    return Err(format!(
                        "put the attributes of <{path}> on its inner <systemUsage>"
                    ));
                }
                for s in &child.children {
                    if let Some(c) = s.children.first() {
                        return Err(not_allowed(
                            &format!("{path}/systemUsage/{}", c.name),
                            "systemUsage",
                            &[],
                        ));
                    }
                    out.system_usage_attributes
                        .extend(s.attributes.iter().cloned());
                }
            }
            _ => out.sections.push(child.clone()),
        }
    }
    Ok(out)
}

fn not_allowed(path: &str, parent: &str, allowed: &[&str]) -> String {
    let allowed = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.join(", ")
    };
    format!(
        "element <{path}> is not allowed in a FerryMQ configuration; allowed under <{parent}>: {allowed}"
    )
}

fn check(e: &Element, path: &str) -> Result<(), String> {
    let Some((attributes, children)) = rules(&e.name) else {
        return Err(format!(
            "element <{path}> is not allowed in a FerryMQ configuration"
        ));
    };
    if let Some((k, _)) = e
        .attributes
        .iter()
        .find(|(k, _)| !attributes.contains(&k.as_str()))
    {
        let allowed = if attributes.is_empty() {
            "none".to_string()
        } else {
            attributes.join(", ")
        };
        return Err(format!(
            "attribute {k:?} of <{path}> is not allowed in a FerryMQ configuration; allowed: {allowed}"
        ));
    }
    for (k, v) in &e.attributes {
        values::check(path, k, v)?;
    }
    for c in &e.children {
        let child_path = format!("{path}/{}", c.name);
        if !children.contains(&c.name.as_str()) {
            return Err(not_allowed(&child_path, &e.name, children));
        }
        check(c, &child_path)?;
    }
    Ok(())
}

/// The document as a tree of elements: well-formed, one root, no DTD, processing
/// instructions, text or namespace prefixes (none of the allowed elements takes them).
fn tree(data: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(data);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {at}: {e}"))?;
        match event {
            Event::Start(s) | Event::Empty(s) if root.is_some() => {
                let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                return Err(format!(
                    "<{name}> after the root element; a configuration has one <broker> root"
                ));
            }
            Event::Start(s) => stack.push(element(s.into_owned(), &stack)?),
            Event::Empty(s) => {
                let e = element(s.into_owned(), &stack)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end names match their start.
                let Some(e) = stack.pop() else {
                    return Err(format!("malformed XML at byte {at}: unmatched end tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::Text(t) => {
                let text = String::from_utf8_lossy(t.as_ref()).trim().to_string();
                if !text.is_empty() {
                    return Err(format!(
                        "text {:?} in <{}>: configuration elements take attributes only",
                        truncate(&text),
                        path_of(&stack)
                    ));
                }
            }
            Event::CData(_) | Event::GeneralRef(_) => {
                return Err(format!(
                    "text in <{}>: configuration elements take attributes only",
                    path_of(&stack)
                ))
            }
            Event::DocType(_) => return Err("a DOCTYPE is not allowed in a configuration".into()),
            Event::PI(_) => {
                return Err("processing instructions are not allowed in a configuration".into())
            }
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("malformed XML: <{}> is never closed", open.name));
    }
    root.ok_or_else(|| "no XML element found".into())
}

fn element(start: BytesStart<'static>, stack: &[Element]) -> Result<Element, String> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut path = path_of(stack);
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(&name);
    if name.contains(':') {
        return Err(format!(
            "element <{path}> has a namespace prefix; write ActiveMQ's elements without one"
        ));
    }
    let mut attributes = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| format!("malformed attribute in <{path}>: {e}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .normalized_value(XmlVersion::Explicit1_0)
            .map_err(|e| format!("malformed value of attribute {key:?} in <{path}>: {e}"))?
            .into_owned();
        if key.starts_with("xmlns") && !(stack.is_empty() && key == "xmlns") {
            return Err(format!(
                "namespace declaration {key:?} in <{path}> is not allowed; only <broker xmlns=\"{CORE_NS}\">"
            ));
        }
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        start,
        children: Vec::new(),
    })
}

fn path_of(stack: &[Element]) -> String {
    stack
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join("/")
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<broker xmlns="http://activemq.apache.org/schema/core" schedulePeriodForDestinationPurge="10000">
  <!-- as Amazon MQ's default configuration -->
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry topic="&gt;" gcInactiveDestinations="true" inactiveTimoutBeforeGC="600000">
          <pendingMessageLimitStrategy>
            <constantPendingMessageLimitStrategy limit="3000"/>
          </pendingMessageLimitStrategy>
        </policyEntry>
        <policyEntry queue="&gt;" gcInactiveDestinations="true" inactiveTimoutBeforeGC="600000"/>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
  <plugins>
    <timeStampingBrokerPlugin zeroExpirationOverride="86400000"/>
    <statisticsBrokerPlugin/>
  </plugins>
  <persistenceAdapter><kahaDB concurrentStoreAndDispatchQueues="false"/></persistenceAdapter>
  <systemUsage><systemUsage sendFailIfNoSpace="true"/></systemUsage>
</broker>"#;

    #[test]
    fn amazon_mq_style_configuration_is_split_for_merging() {
        let c = parse(FULL).expect("valid");
        assert_eq!(
            c.broker_attributes,
            [(
                "schedulePeriodForDestinationPurge".to_string(),
                "10000".to_string()
            )]
        );
        assert_eq!(c.sections.len(), 1);
        assert_eq!(c.sections[0].name, "destinationPolicy");
        let entries = &c.sections[0].children[0].children[0].children;
        assert_eq!(entries[0].attributes[0], ("topic".into(), ">".into()));
        // statisticsBrokerPlugin is FerryMQ's own already.
        assert_eq!(c.plugins.len(), 1);
        assert_eq!(c.plugins[0].name, "timeStampingBrokerPlugin");
        assert_eq!(
            c.kahadb_attributes,
            [(
                "concurrentStoreAndDispatchQueues".to_string(),
                "false".to_string()
            )]
        );
        assert_eq!(
            c.system_usage_attributes,
            [("sendFailIfNoSpace".to_string(), "true".to_string())]
        );
        // The events copy the element back.
        assert_eq!(c.sections[0].events().len(), 12);
    }

    #[test]
    fn forbidden_elements_are_named_with_their_path() {
        let e = parse(
            r#"<broker xmlns="http://activemq.apache.org/schema/core"><transportConnectors><transportConnector uri="tcp://0.0.0.0:1"/></transportConnectors></broker>"#,
        )
        .unwrap_err();
        assert!(
            e.contains("<broker/transportConnectors> is not allowed"),
            "{e}"
        );
        let e = parse(
            r#"<broker xmlns="http://activemq.apache.org/schema/core"><plugins><loggingBrokerPlugin/></plugins></broker>"#,
        )
        .unwrap_err();
        assert!(e.contains("<broker/plugins/loggingBrokerPlugin>"), "{e}");
        let e = parse(
            r#"<broker xmlns="http://activemq.apache.org/schema/core"><plugins><authorizationPlugin/></plugins></broker>"#,
        )
        .unwrap_err();
        assert!(e.contains("authorizationPlugin"), "{e}");
        let e = parse(
            r#"<broker xmlns="http://activemq.apache.org/schema/core"><persistenceAdapter><kahaDB directory="/etc"/></persistenceAdapter></broker>"#,
        )
        .unwrap_err();
        assert!(
            e.contains("attribute \"directory\" of <broker/persistenceAdapter/kahaDB>"),
            "{e}"
        );
        let e = parse(r#"<broker xmlns="http://activemq.apache.org/schema/core" useJmx="true"/>"#)
            .unwrap_err();
        assert!(e.contains("\"useJmx\" of <broker>"), "{e}");
        let e = parse(
            r#"<broker xmlns="http://activemq.apache.org/schema/core"><systemUsage><systemUsage><memoryUsage/></systemUsage></systemUsage></broker>"#,
        )
        .unwrap_err();
        assert!(
            e.contains("<broker/systemUsage/systemUsage/memoryUsage>"),
            "{e}"
        );
    }

    #[test]
    fn malformed_and_unsafe_documents_are_refused() {
        assert!(
            parse("<broker xmlns=\"http://activemq.apache.org/schema/core\">")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(parse("<broker><plugins></broker>")
            .unwrap_err()
            .contains("malformed XML"));
        assert!(parse("<beans/>")
            .unwrap_err()
            .contains("root element is <beans>"));
        assert!(parse(
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/shadow\">]><broker xmlns=\"http://activemq.apache.org/schema/core\"/>"
        )
        .unwrap_err()
        .contains("DOCTYPE"));
        assert!(parse("<broker xmlns=\"urn:other\"/>")
            .unwrap_err()
            .contains("xmlns"));
        assert!(
            parse("<broker xmlns=\"http://activemq.apache.org/schema/core\"/><broker/>")
                .unwrap_err()
                .contains("one <broker> root")
        );
        assert!(
            parse("<broker xmlns=\"http://activemq.apache.org/schema/core\">text</broker>")
                .unwrap_err()
                .contains("attributes only")
        );
        assert!(parse("<broker xmlns=\"http://activemq.apache.org/schema/core\"><x:plugins xmlns:x=\"u\"/></broker>")
            .unwrap_err()
            .contains("prefix"));
    }
}
