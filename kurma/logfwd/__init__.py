"""The log forwarder, the `syslog` system service's program (`python3 -m kurma.logfwd`).

The kernel log (/dev/kmsg) and every pod's logs (through kurma's API, as a `host-read`
caller) go out as RFC 5424 syslog over TCP (RFC 6587 octet counting) or UDP, buffered in
memory while the target is down.

Top layer beside the CLI: it talks to kurmad only through `kurma.client`.
"""

from ._kmsg import KmsgRecord as KmsgRecord
from ._kmsg import kernel_message as kernel_message
from ._kmsg import parse_record as parse_record
from ._main import main as main
from ._main import parse_target as parse_target
from ._podlogs import PodLine as PodLine
from ._podlogs import PodLogSource as PodLogSource
from ._rfc5424 import SD_ID as SD_ID
from ._rfc5424 import Message as Message
from ._rfc5424 import format_message as format_message
from ._rfc5424 import octet_frame as octet_frame
from ._rfc5424 import pod_log_message as pod_log_message
from ._rfc5424 import truncate as truncate
from ._sender import Backoff as Backoff
from ._sender import Sender as Sender
from ._sender import TcpSender as TcpSender
from ._sender import UdpSender as UdpSender
from ._sources import KmsgSource as KmsgSource
