"""The enrollment bundle of a P2P server: the one file a deployment tool hands a device.

It carries everything ``shoal client enroll`` needs and nothing an administrator must
type: the console's signing key (pinned by the device), the console's TLS certificate
fingerprint (shown at enrollment, for an administrator to compare), the P2P server's
address and control port, the P2P ports the console set (the device listens on them
from its first start), and the enrollment token (a secret).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from shoal.console import db, records, schemas
from shoal.console.security import certificate_fingerprint
from shoal.console.state import ConsoleState
from shoal.core.identity import enrollment_token_for


def build_bundle(
    state: ConsoleState, session: Session, server: db.Server
) -> schemas.EnrollmentBundle:
    """The bundle of ``server`` as the console's settings stand now."""
    ports = records.load_p2p_settings(session).ports
    return schemas.EnrollmentBundle(
        console_key=state.signing_key.verify_key.raw.hex(),
        console_cert_sha256=(certificate_fingerprint(state.cert_path) if state.cert_path else None),
        enrollment_token=enrollment_token_for(state.server_key).hex(),
        server=server.address,
        server_port=ports.control,
        ports=ports,
    )
