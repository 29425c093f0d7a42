"""Sessions, decided without I/O: cookie -> load flow -> Session -> save flow -> Set-Cookie.

:class:`SessionCore` holds the flows and the decisions; the hash's layout and the scripts
that read and write it are in ``scripts.py``, the ``dict`` handed to applications in
``mapping.py``, the cookies in ``cookies.py`` (``docs/sessions.md`` tells the whole
story). A user's sessions are indexed in the ZSET
``<prefix>:session:user:{<sha256(user id)>}`` (member: session ref, score: last write)
for "log out everywhere".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..._memo import Memo, Recent
from ...config.settings import Settings
from ...errors import RedisMiddlewareError, SessionLimitError
from ...keys import KeySpace, digest
from .. import metrics
from ..flow import Batch, Call, Flow
from ..incidents import log_incident
from . import scripts
from .cookies import CookieSigner, IncomingCookie, new_session_id
from .mapping import JSON, Codec, Limits, Loader, Session, encode
from .scripts import COMPACT_FIELDS, COMPACT_VALUE, ESCAPED, META, PACKED, key_name, packed

_META = META.encode()
_REMEMBERED_BYTES = 1024  # the largest hash whose decoding is remembered
_REMEMBERED_FIELDS = 16  # and the most fields (metadata included)
_PLAIN = (str, int, float, bool)  # values a remembered decoding may hold (and None)

__all__ = ["SaveResult", "SessionCore", "SessionInfo"]

logger = logging.getLogger("redis_middleware.sessions")

_compact_warned = False


def _note_encoding(written: dict[str, str], fields: int) -> None:
    """Say once per process that sessions outgrow Redis's compact hash encoding."""
    global _compact_warned
    if _compact_warned:
        return
    if fields > COMPACT_FIELDS or any(
            len(v) > COMPACT_VALUE and packed(v) is None and len(
                v.encode("utf-8", "surrogatepass")) > COMPACT_VALUE
            for v in written.values()):
        _compact_warned = True
        logger.warning(
            "a session holds a value over %d bytes or over %d fields: Redis stores such "
            "hashes in its larger encoding (several times the memory per session); raise "
            "hash-max-listpack-value / hash-max-listpack-entries if that is common",
            COMPACT_VALUE, COMPACT_FIELDS)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _as_dict(raw: Any) -> dict[bytes, bytes]:
    """A hash as ``HGETALL`` or the load script answers it: a map (RESP3's ``HGETALL``)
    or a flat list of fields and values."""
    if isinstance(raw, dict):
        return raw
    it = iter(raw)
    return dict(zip(it, it, strict=True))


def _live(meta: bytes | None, now: int, absolute: int) -> int | None:
    """When a session's idle expiry last slid (ms), from its metadata field
    ``<created>:<last slide>`` (base 36); None when there is no live session: no such
    field (only the forwarding field a login left), or its lifetime is over."""
    if meta is None:
        return None
    created36, _, last36 = meta.decode("latin-1").partition(":")
    try:
        created = int(created36, 36)
        last = int(last36, 36) if last36 else 0
    except ValueError:
        return None
    return last if created + absolute > now else None


@dataclass(frozen=True, slots=True)
class CookieRules:
    """When the cookie is sent, beyond a new id or a re-signature (Flask's rules).

    ``follow_permanent``: the cookie is persistent only while ``session.permanent``
    (Flask); otherwise ``Settings.session_cookie_persistent`` decides for every session.
    ``resend_on_change``: sent again whenever the session changed, or was assigned to
    without a change (``session.assigned``: an equal value, ``modified = True`` by hand),
    as Flask's ``modified`` decides; nothing is written to Redis for an equal value.
    ``refresh_each_request``: sent again on every request of a persistent session (Flask's
    ``SESSION_REFRESH_EACH_REQUEST``), so its expiry slides in the browser too.
    """

    follow_permanent: bool = False
    resend_on_change: bool = False
    refresh_each_request: bool = False


# Per-request value: not frozen (a frozen dataclass's __init__ costs about 0.1 µs a field,
# measured), and nothing changes it once built.
@dataclass(slots=True)
class SaveResult:
    """What saving decided: the Set-Cookie header value (if any) and whether Redis took it."""

    set_cookie: str | None
    stored: bool


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user (``ref`` is an opaque handle, not a usable cookie)."""

    ref: str
    created: float
    last_seen: float
    expires_in: int


class SessionCore:
    """Every session decision; the ASGI and WSGI adapters only run its flows."""

    def __init__(self, settings: Settings, codec: Codec = JSON,
                 rules: CookieRules | None = None, also_user_fields: tuple[str, ...] = (),
                 session_type: type[Session] = Session) -> None:
        self.settings = settings
        self.session_type = session_type  # the adapter's Session (Flask's ``modified``)
        self.codec = codec
        self.rules = rules or CookieRules()
        # Other keys that name the user when ``user_field`` is absent (Flask-Login's).
        self.also_user_fields = also_user_fields
        self.keys = KeySpace(settings.key_prefix)
        self.cookies = CookieSigner(settings)
        self.limits = Limits(settings)
        self.cookie_name = settings.session_cookie_name
        self.readonly_on_error = settings.session_on_redis_error == "readonly"
        # session id -> its ref (a SHA-256 per id) and its hash's key
        self._refs: Memo[str, tuple[str, str]] = Memo(4096)
        # Hashes decoded before, as read (see _decode_hash).
        self._decoded: Memo[tuple[tuple[bytes, bytes], ...],
                            tuple[dict[str, Any], dict[str, str]]] = Memo(1024)
        self._slide_ms = int(settings.session_slide_interval * 1000)
        # session ref -> when this process last saw its idle expiry slide (epoch ms, as
        # its metadata field says): a load within ``session_slide_interval`` of it needs
        # no script (see load_flow).
        self._slid: Recent[str, int] = Recent(4096)

    # -- keys -----------------------------------------------------------------
    def ref(self, session_id: str) -> str:
        """The public handle of a session: its slot tag + a one-way digest of its id."""
        return self._ref_key(session_id)[0]

    def _ref_key(self, session_id: str) -> tuple[str, str]:
        """A session's ref and the key of its hash."""
        found = self._refs.get(session_id)
        if found is None:
            ref = session_id[:4] + digest(session_id)
            found = self._refs.put(session_id, (ref, self._key(ref)))
        return found

    def _key(self, ref: str) -> str:
        return self.keys.session(ref[:4], ref[4:])

    # -- loading ----------------------------------------------------------------
    def read_cookie(self, cookies: Mapping[str, str]) -> IncomingCookie:
        return self.cookies.verify(cookies.get(self.cookie_name))

    def load_flow(self, session_id: str) -> Flow[tuple[dict[str, Any], dict[str, str]] | None]:
        """One round trip: read the hash, and slide its idle expiry (bounded by the
        lifetime) when ``session_slide_interval`` has passed since the last slide.

        A session this process saw slide less than that interval ago is read with
        ``HGETALL`` alone, not with the load script: no slide can be due (one by another
        process only makes the last one more recent), and what else the script checks
        (a live session, its absolute lifetime) is checked here on the metadata field.
        Measured: the script costs Redis about three times the CPU of the ``HGETALL``
        it runs.
        """
        s = self.settings
        ref, key = self._ref_key(session_id)
        now = _now_ms()
        absolute = s.session_absolute_lifetime * 1000
        slid = self._slid.get(ref)
        if slid is not None and abs(now - slid) < self._slide_ms:
            (raw,) = yield (Call.of("HGETALL", key),)
            fields = _as_dict(raw)
            last = _live(fields.get(_META), now, absolute)
            loaded = self._decode_hash(fields) if last is not None else None
        else:
            (raw,) = yield (scripts.load(key, now, s.session_idle_timeout * 1000, absolute,
                                         self._slide_ms),)
            fields = _as_dict(raw) if raw else {}
            last = _live(fields.get(_META), now, absolute)
            if last is not None and abs(now - last) >= self._slide_ms:
                last = now  # the script slid it (it returns the hash as it was read)
            loaded = self._decode_hash(fields) if raw else None
        if self._slide_ms and last is not None and last != slid:  # 0: always the script
            self._slid.put(ref, last)
        if metrics.hook is not None:
            metrics.hook.session("load")
        return loaded

    def read_flow(self, session_id: str) -> Flow[tuple[dict[str, Any], dict[str, str]] | None]:
        """One round trip, read only: the hash as stored, its expiry untouched (Django's
        rule: a session expires a fixed time after it was last saved, not last read)."""
        (raw,) = yield (Call.of("HGETALL", self._ref_key(session_id)[1]),)
        if metrics.hook is not None:
            metrics.hook.session("load")
        if not raw:
            return None
        fields = _as_dict(raw)
        if _META not in fields:
            return None  # only a forwarding field: an id that a login replaced
        return self._decode_hash(fields)

    def _decode_hash(self, fields: dict[bytes, bytes]) -> tuple[dict[str, Any], dict[str, str]]:
        """:meth:`_decode_pairs` of a hash as read, remembered per hash: a signed-in
        user's requests read the same bytes again and again, and decoding them was the
        largest share of such a request's Python work (measured: 8% of its bytecode).

        A pure memo, keyed by the bytes read: a changed hash is another key. Only small
        hashes (at most 16 fields and 1 KB) of plain values are kept, so that no list or
        dict is shared between two requests' sessions; each caller gets its own copy of
        the data. The stored encodings are shared: nothing changes them in place (a save
        replaces them). A field that does not decode is then dropped with one warning,
        not one per load; the decoded data of up to 1,024 recent hashes stays in the
        process's memory after they change or go (never served for them: the key is the
        bytes read).
        """
        if len(fields) > _REMEMBERED_FIELDS:  # large: no key built, no lookup
            return self._decode_pairs(fields.items())
        key = tuple(fields.items())
        found = self._decoded.get(key)
        if found is not None:
            return dict(found[0]), found[1]
        data, stored = self._decode_pairs(key)
        if sum(len(f) + len(v) for f, v in key) <= _REMEMBERED_BYTES and all(
                v is None or type(v) in _PLAIN for v in data.values()):
            self._decoded.put(key, (data, stored))
            return dict(data), stored
        return data, stored

    def _decode_pairs(self, pairs: Iterable[tuple[bytes, bytes]]
                      ) -> tuple[dict[str, Any], dict[str, str]]:
        """The data and the stored encodings of a hash's fields (metadata skipped)."""
        data: dict[str, Any] = {}
        stored: dict[str, str] = {}
        loads = self.codec.loads
        plain = self.codec is JSON
        for f, v in pairs:
            if f[:1] == b"\x00":
                continue  # metadata
            name = f.decode("utf-8", "surrogatepass")
            if name[:1] == PACKED:
                name, text = name[1:], f'"{v.hex()}"'
            else:
                text = v.decode("utf-8", "surrogatepass")
            if name[:1] == ESCAPED:
                name = key_name(name)
            # A JSON string with no escape, quote or control character inside is its
            # text unquoted: json.loads, measured, was most of a signed-in session's
            # decoding (three short strings).
            if plain and text[:1] == '"' and text.count('"') == 2 and text[-1:] == '"' and (
                    "\\" not in text and text.isprintable()):
                data[name] = text[1:-1]
            else:
                try:
                    data[name] = loads(text)
                except ValueError:
                    logger.warning("dropping an undecodable session field")
                    continue
            stored[name] = text
        return data, stored

    def exists_flow(self, session_id: str) -> Flow[bool]:
        """Whether a live session stands behind ``session_id`` (one round trip)."""
        (found,) = yield (Call.of("HEXISTS", self._key(self.ref(session_id)), META),)
        return bool(found)

    def delete_flow(self, session_id: str, user: str | None) -> Flow[bool]:
        """End one session now (and drop it from ``user``'s index); True when it was live."""
        ops = [Call.of("DEL", self._key(self.ref(session_id))),
               *self._index_ops(user, session_id, None)]
        answers = yield tuple(ops)
        return bool(answers[0])

    def session_for(self, incoming: IncomingCookie, loader: Loader | None = None) -> Session:
        """A session with nothing loaded yet; ``loader`` loads it on first access."""
        return self.session_type(self.limits, incoming.session_id, loader=loader,
                                 readonly_on_error=self.readonly_on_error,
                                 user_field=self.settings.user_field, codec=self.codec,
                                 also_user_fields=self.also_user_fields)

    # -- saving -----------------------------------------------------------------
    def save_flow(
        self, session: Session, incoming: IncomingCookie, https: bool
    ) -> Flow[SaveResult]:
        """Write what changed (at most one round trip) and decide the Set-Cookie header.

        A session the request never loaded is loaded now only to refresh its cookie
        (``refresh_each_request``: the cookie of a persistent session slides on every
        request, and the load slides the data's idle expiry with it); if that fails, the
        request, which did not need its session, goes on without the refresh.
        """
        if not session.exists and not session.assigned and session.loaded and (
                not session.degraded and session.is_empty()):
            # Most anonymous requests: no stored session, nothing in it, nothing assigned
            # (so no cookie to send or expire); what follows would decide the same.
            return SaveResult(None, False)
        if not session.loaded:
            session_id = session.session_id
            if not (self.rules.refresh_each_request and session.pending
                    and session_id is not None):
                return SaveResult(None, False)
            try:
                session.set_loaded((yield from self.load_flow(session_id)))
            except RedisMiddlewareError:
                return SaveResult(None, False)  # logged once by the breaker
        try:
            written, deleted = session.changes()
        except SessionLimitError as exc:  # an in-place mutation outgrew a limit
            logger.error("session changes dropped: %s", exc)
            if metrics.hook is not None:
                metrics.hook.session("size-refused")
            return SaveResult(None, False)
        old_id = session.session_id if session.exists else None
        if session.degraded:
            if written or deleted or session.cleared or session.regenerated:
                log_incident("session-drop", "session changes dropped: the session store "
                             "is unavailable")
            return SaveResult(None, False)

        s = self.settings
        rules = self.rules
        # Flask's rule: a session assigned to is sent again (or, emptied, expired) even
        # when the assignment changed nothing and nothing is written.
        resend = rules.resend_on_change and session.assigned
        # A lifetime of 0 or less (Starlette's max_age=-1) keeps no session: nothing is
        # written, and the cookie is expired at once.
        lasting = s.session_absolute_lifetime > 0
        if session.is_empty() or not lasting:  # nothing to keep
            if old_id is not None:
                ops: list[Call] = [Call.of("DEL", self._key(self.ref(old_id)))]
                ops += self._index_ops(session.loaded_user, old_id, None)
                yield tuple(ops)
            elif session.is_empty() and not resend:
                return SaveResult(None, False)
            return SaveResult(self.cookies.expire_cookie(https), old_id is not None)

        persistent = session.permanent if rules.follow_permanent else None
        if old_id is None or session.cleared:
            mode, new_id = "create", new_session_id()
            written = {k: encode(v, self.codec) for k, v in session.peek().items()}
            deleted = []
        elif session.regenerated:
            mode, new_id = "move", new_session_id(old_id[:4])
        elif written or deleted:
            mode, new_id = "update", old_id
        else:  # unchanged: a cookie signed by an older secret is re-signed
            refresh = rules.refresh_each_request and (
                persistent if persistent is not None else s.session_cookie_persistent)
            cookie = self.cookies.set_cookie(old_id, https, persistent) if (
                incoming.resign or refresh or resend) else None
            return SaveResult(cookie, True)

        _note_encoding(written, session.size())
        stored = yield from self.store_flow(
            mode, new_id, old_id, written, deleted, user=session.user_id,
            loaded_user=session.loaded_user, clear_old=session.cleared)
        if not stored:
            logger.info("session changes refused: the session was deleted meanwhile")
            return SaveResult(self.cookies.expire_cookie(https), False)
        if stored == 2:  # a login moved it meanwhile: merged there, the cookie is the
            return SaveResult(None, True)  # login's business
        if new_id != old_id or incoming.resign or rules.resend_on_change or (
                rules.refresh_each_request and persistent):
            return SaveResult(self.cookies.set_cookie(new_id, https, persistent), True)
        return SaveResult(None, True)

    def store_flow(
        self, mode: str, new_id: str, old_id: str | None, written: Mapping[str, str],
        deleted: list[str], *, user: str | None, loaded_user: str | None,
        clear_old: bool = False, now: int | None = None, lifetime: int | None = None,
    ) -> Flow[int]:
        """Write one session in one round trip and keep its user's index in step.

        ``mode``: ``"create"`` a hash for ``new_id``; ``"update"`` the live hash (0 when
        it was deleted meanwhile: nothing is resurrected); ``"move"`` the hash of
        ``old_id`` to ``new_id`` first (a login). ``written`` maps keys to their stored
        encodings. ``lifetime``: this save's idle expiry in seconds (default
        ``session_idle_timeout``), never past the absolute lifetime. Returns 1 when
        stored, 2 when the changes followed a concurrent move, 0 when refused (also a
        ``"create"`` of an id that holds a session). Only a stored session stays in
        ``user``'s index.
        """
        s = self.settings
        now = _now_ms() if now is None else now
        idle = s.session_idle_timeout if lifetime is None else lifetime
        key = self._key(self.ref(new_id))
        old_key = self._key(self.ref(old_id)) if old_id else key
        ops: list[Call] = [scripts.save(
            mode, key, old_key, now, idle * 1000, s.session_absolute_lifetime * 1000,
            int(s.session_regenerate_grace * 1000), written, deleted)]
        if clear_old and old_id and old_id != new_id:
            ops.append(Call.of("DEL", old_key))
        if mode != "update" or user != loaded_user:
            ops += self._index_ops(loaded_user, old_id, None)
        added = len(ops)  # where the ZADD of ``user``'s index answers
        ops += self._index_ops(user, new_id, now)
        results = yield tuple(ops)
        stored = int(results[0] or 0)
        if stored != 1 and user is not None and results[added] == 1:
            # The session is not (or no longer) under ``new_id``: take back the index
            # entry this round trip added. The index lives in another Cluster slot than
            # the session, so the script cannot decide it; a refused save is the rare
            # case (a race), and costs this one more round trip.
            yield (Call.of("ZREM", self.keys.session_index(user), self.ref(new_id)),)
        if metrics.hook is not None:
            metrics.hook.session(("regenerate" if mode == "move" else "write") if stored
                                 else "conflict")
        return stored

    def _index_ops(self, user: str | None, session_id: str | None, now: int | None) -> list[Call]:
        if user is None or session_id is None:
            return []
        index = self.keys.session_index(user)
        ref = self.ref(session_id)
        if now is None:
            return [Call.of("ZREM", index, ref)]
        lifetime = self.settings.session_absolute_lifetime
        return [
            Call.of("ZADD", index, now, ref),
            Call.of("ZREMRANGEBYSCORE", index, "-inf", now - lifetime * 1000),
            Call.of("EXPIRE", index, lifetime),
        ]

    # -- the per-user index ---------------------------------------------------------
    def list_flow(self, user_id: str) -> Flow[list[SessionInfo]]:
        """A user's live sessions, most recently written first; prunes dead entries."""
        index = self.keys.session_index(user_id)
        (members,) = yield (Call.of("ZREVRANGE", index, 0, -1),)
        refs = [m.decode() for m in members]
        if not refs:
            return []
        batch: Batch = tuple(
            op for ref in refs
            for op in (Call.of("HGET", self._key(ref), META), Call.of("TTL", self._key(ref)))
        )
        answers = yield batch
        live: list[SessionInfo] = []
        dead: list[str] = []
        for i, ref in enumerate(refs):
            meta, ttl = answers[2 * i], answers[2 * i + 1]
            if meta is None or ttl < 0:
                dead.append(ref)
                continue
            created, _, seen = meta.decode().partition(":")
            live.append(SessionInfo(ref, int(created, 36) / 1000, int(seen, 36) / 1000,
                                    int(ttl)))
        if dead:
            yield (Call.of("ZREM", index, *dead),)
        return live

    def revoke_flow(self, user_id: str, ref: str) -> Flow[bool]:
        """End one session of a user at once; True when it was live."""
        index = self.keys.session_index(user_id)
        (removed,) = yield (Call.of("ZREM", index, ref),)
        if not removed or len(ref) != 26:
            return False
        (deleted,) = yield (Call.of("DEL", self._key(ref)),)
        return bool(deleted)

    def revoke_all_flow(self, user_id: str) -> Flow[int]:
        """End every session of a user ("log out everywhere"); returns how many were live."""
        return (yield from self.revoke_index_flow(self.keys.session_index(user_id)))

    def index_pattern(self) -> str:
        """The SCAN pattern of every user's session index (``sessions revoke --all-users``)."""
        return self.keys.session_index("x").rsplit(":", 1)[0] + ":*"

    def revoke_index_flow(self, index: str) -> Flow[int]:
        """End every session listed in one user's index key; returns how many were live."""
        (members,) = yield (Call.of("ZRANGE", index, 0, -1),)
        refs = [m.decode() for m in members if len(m) == 26]
        # One DEL per key: in a cluster the sessions live in different slots.
        answers = yield (*(Call.of("DEL", self._key(ref)) for ref in refs), Call.of("DEL", index))
        return sum(int(n) for n in answers[:-1])
