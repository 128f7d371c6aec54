"""The XMPP adapter: the only place that knows slixmpp, JIDs, stanzas and rooms."""

from broker_bridge.xmpp.addresses import AddressBook, XmppSettings, is_loopback
from broker_bridge.xmpp.transport import BrokerUnreachableError, XmppTransport

__all__ = ["AddressBook", "BrokerUnreachableError", "XmppSettings", "XmppTransport", "is_loopback"]
