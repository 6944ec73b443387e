"""Remote commands from the head-end: checked, run, answered (docs/wire-format.md, "Commands").

The uplink hands every message on ``meterlink/v1/{gateway}/cmd/{id}`` to ``CommandAgent``
(on the event loop). A command runs only if it is signed by a head-end command key this
gateway trusts (``{state_dir}/keys/headend-command*.pub``), names this gateway and the id of
its topic, has not expired (real UTC time: expiry is about transport delay, not about the
fleet's virtual clock), expires at most ``MAX_AHEAD_MS`` ahead, and its id was never seen
(the ids are kept in ``{state_dir}/commands-seen.json`` until they expire, so a replay is
refused after a restart too). A well-formed command that fails a check gets a ``refused``
reply; a payload that does not parse gets none (logged).

Actions: ``ping``; ``read-now`` (one meter outside its schedule: the capture goes through
the writer into the signed buffer like any other); ``backfill`` (a DLMS meter's load
profile by range); ``set-clock`` (a DLMS meter's clock to the gateway's); ``push-config``
(validate, apply, trial-read every meter within a time limit, keep it or roll back to the
previous config); ``rotate-key`` (a new signing key; the reply carrying its public key is
signed with the old one, and records are signed with the new one from then on).

Meters of one bus are never read concurrently: every driver's ``read`` is wrapped so that
it holds its bus's lock, which the command handlers take as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.commands import Command, Reply, parse_command_topic, reply_topic
from protocols.errors import DecodeError, EncodeError
from protocols.keys import KeyFormatError, public_key_from_pem, write_exclusive
from protocols.record import ClockSource

from .buffer import Capture, ReadError
from .config import AgentConfig, ConfigError, load_config
from .drivers.dlms import DlmsMeter
from .drivers.dlms.meter import make_transport
from .drivers.dlms.profile import MAX_CHUNKS, ProfileReader
from .drivers.dlms.session import DlmsSession
from .keys import GatewayKey, key_id, private_key_path, public_key_path
from .scheduler import BusScheduler, ScheduledMeter, next_slot

if TYPE_CHECKING:
    from .service import AgentService

__all__ = ["MAX_AHEAD_MS", "SEEN_FILE", "TRUST_GLOB", "CommandAgent", "load_trusted_keys"]

log = logging.getLogger("agent.commands")

TRUST_GLOB = "headend-command*.pub"  # in the keys dir: the head-end keys commands may carry
SEEN_FILE = "commands-seen.json"  # in the state dir: command ids seen, until they expire
MAX_AHEAD_MS = 7 * 86_400_000  # a command expiring later is refused (bounds the seen list)
DEFAULT_TIMEOUT_S = 60.0  # a meter action's limit when the command gives none
DEFAULT_TRIAL_S = 60.0  # push-config: time for the new config to read every meter
MAX_BACKFILL_MS = MAX_CHUNKS * 86_400_000  # one backfill command covers at most this span


class Refused(Exception):
    """The command is not run; the message says why (sent in the reply)."""


def load_trusted_keys(keys_dir: Path) -> dict[str, Ed25519PublicKey]:
    """The head-end command keys in ``keys_dir`` by key id (a bad file is logged, skipped)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(keys_dir.glob(TRUST_GLOB)):
        try:
            key = public_key_from_pem(path.read_bytes())
        except (OSError, KeyFormatError) as exc:
            log.warning("%s: not used as a head-end command key: %s", path, exc)
            continue
        keys[key_id(key)] = key
    return keys


@dataclass(slots=True)
class CommandCounters:
    received: int = 0
    run: int = 0
    refused: int = 0
    unparsed: int = 0
    by_action: dict[str, int] = field(default_factory=dict)


Answer = tuple[str, str, dict[str, Any]]  # status, message, result


class CommandAgent:
    """Runs the head-end's commands against a running ``AgentService``."""

    def __init__(self, service: AgentService, key: GatewayKey) -> None:
        self.service = service
        self.config: AgentConfig = service.config
        self.key = key
        self.counters = CommandCounters()
        self.trusted = load_trusted_keys(self.config.keys_dir)
        self.seen_path = self.config.gateway.state_dir / SEEN_FILE
        self.seen: dict[str, int] = self._load_seen()
        self._locks: dict[str, asyncio.Lock] = {}  # meter id -> its bus's lock
        self._exclusive = asyncio.Lock()  # push-config and rotate-key run one at a time
        self._tasks: set[asyncio.Task[None]] = set()
        self.lock_buses(service.schedulers)
        if not self.trusted:
            log.warning(
                "no head-end command key in %s (%s): remote commands are refused",
                self.config.keys_dir,
                TRUST_GLOB,
            )

    # -- bus locks ------------------------------------------------------------------------

    def lock_buses(self, schedulers: list[BusScheduler]) -> None:
        """Wrap each driver's ``read`` so that it holds its bus's lock (schedule and
        commands never talk to one bus at the same time)."""
        for sched in schedulers:
            lock = asyncio.Lock()
            for scheduled in sched.meters:
                driver: Any = scheduled.driver
                self._locks[scheduled.meter_id] = lock
                plain = driver.read

                async def read(
                    plain: Callable[[], Awaitable[object]] = plain, lock: asyncio.Lock = lock
                ) -> object:
                    async with lock:
                        return await plain()

                driver.read = read
                driver.unlocked_read = plain

    # -- intake (event loop) -------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        task = asyncio.ensure_future(self._handle(topic, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def _handle(self, topic: str, payload: bytes) -> None:
        self.counters.received += 1
        try:
            gateway_id, topic_id, is_reply = parse_command_topic(topic)
            if is_reply:
                return  # our own reply echoed (we never subscribe to it, but be safe)
            command = Command.parse(payload)
        except DecodeError as exc:
            self.counters.unparsed += 1
            log.warning("ignoring a message on %s that is not a command: %s", topic, exc)
            return
        try:
            self._check(command, gateway_id, topic_id)
        except Refused as exc:
            self.counters.refused += 1
            log.warning("command %s (%s) refused: %s", command.command_id, command.action, exc)
            await self._reply(command, "refused", str(exc), {})
            return
        self.counters.run += 1
        action = command.action
        self.counters.by_action[action] = self.counters.by_action.get(action, 0) + 1
        log.info("command %s: %s %s", command.command_id, action, _args_text(command.args))
        if action == "rotate-key":
            # one rotation at a time, from the new key's files to the switch after the reply
            async with self._exclusive:
                await self._rotate(command)
            return
        try:
            status, message, result = await self._run(command)
        except Refused as exc:
            status, message, result = "refused", str(exc), {}
        except Exception as exc:  # a handler's bug must not take the agent down
            log.exception("command %s (%s) failed", command.command_id, action)
            status, message, result = "error", f"{type(exc).__name__}: {exc}", {}
        log.info("command %s: %s %s", command.command_id, status, message)
        await self._reply(command, status, message, result)

    async def _rotate(self, command: Command) -> None:
        try:
            (status, message, result), switch = self._rotate_key()
        except OSError as exc:
            log.warning("command %s: rotate-key failed: %s", command.command_id, exc)
            await self._reply(command, "error", f"new key not written: {exc}", {})
            return
        log.info("command %s: %s %s", command.command_id, status, message)
        if await self._reply(command, status, message, result):
            switch()
        else:  # the head-end never heard of the new key: keep signing with the old one
            self._discard_new_key()

    def _check(self, command: Command, gateway_id: str, topic_id: str) -> None:
        key = self.trusted.get(command.key_id)
        if key is None:
            self.trusted = load_trusted_keys(self.config.keys_dir)  # installed since start?
            key = self.trusted.get(command.key_id)
        if key is None:
            raise Refused(
                f"signed by key {command.key_id}, which this gateway does not trust "
                f"(trusted: {', '.join(self.trusted) or 'none'}; install the head-end's "
                f"command key as {self.config.keys_dir}/headend-command.pub)"
            )
        if not command.verify(key):
            raise Refused(f"bad signature (key {command.key_id})")
        if command.gateway_id != self.config.gateway.id or gateway_id != command.gateway_id:
            raise Refused(
                f"command for gateway {command.gateway_id!r} on the topic of {gateway_id!r}"
            )
        if command.command_id != topic_id:
            raise Refused(f"command id {command.command_id!r} on the topic of id {topic_id!r}")
        now = self._now_ms()
        if command.expires_ms <= now:
            raise Refused(f"expired {(now - command.expires_ms) / 1000:.1f}s ago")
        if command.expires_ms - now > MAX_AHEAD_MS:
            raise Refused(f"expiry more than {MAX_AHEAD_MS // 86_400_000} days ahead")
        if command.action not in _HANDLERS and command.action != "rotate-key":
            raise Refused(f"unknown action {command.action!r}")
        self._prune(now)
        if command.command_id in self.seen:
            raise Refused(f"replay: command id {command.command_id} was already received")
        self.seen[command.command_id] = command.expires_ms
        self._save_seen()

    # -- the seen-id list ----------------------------------------------------------------

    def _load_seen(self) -> dict[str, int]:
        try:
            doc = json.loads(self.seen_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # losing the list would let an unexpired command run twice: refuse them all
            # until the file is fixed (every id is "seen" until then)
            log.error(
                "%s: unreadable (%s): commands are refused until it is removed", self.seen_path, exc
            )
            return _EverySeen()
        if not isinstance(doc, dict):
            return _EverySeen()
        return {str(k): int(v) for k, v in doc.items() if isinstance(v, int)}

    def _prune(self, now_ms: int) -> None:
        for cid in [cid for cid, expires in self.seen.items() if expires <= now_ms]:
            del self.seen[cid]

    def _save_seen(self) -> None:
        if isinstance(self.seen, _EverySeen):
            return
        tmp = self.seen_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.seen, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.seen_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.seen_path, exc)

    # -- replies -------------------------------------------------------------------------

    async def _reply(
        self, command: Command, status: str, message: str, result: dict[str, Any]
    ) -> bool:
        uplink = self.service.uplink
        assert uplink is not None
        reply = Reply(
            self.config.gateway.id,
            command.command_id,
            status,
            message,
            result,
            at_ms=self.config.gateway.clock.virtual_ns(time.time_ns()) // 1_000_000,
        )
        try:
            payload = reply.sign(self.key.private)
        except EncodeError as exc:  # e.g. a read-now that brought weeks of profile entries
            short = {"truncated": f"result too large for one reply ({exc})"}
            if "captures" in result:  # the register capture (last) is the one asked for
                short["captures"] = result["captures"][-1:]
                short["capture_count"] = len(result["captures"])
            reply = replace(reply, result=short)
            payload = reply.sign(self.key.private)
        try:
            await uplink._publish_confirmed(
                reply_topic(self.config.gateway.id, command.command_id), payload
            )
        except OSError as exc:
            log.warning("reply to command %s not published: %s", command.command_id, exc)
            return False
        return True

    # -- actions -------------------------------------------------------------------------

    async def _run(self, command: Command) -> Answer:
        handler = _HANDLERS[command.action]
        if command.action == "push-config":
            async with self._exclusive:
                return await handler(self, command.args)
        return await handler(self, command.args)

    def _find(self, args: dict[str, Any]) -> tuple[BusScheduler, ScheduledMeter]:
        meter_id = args.get("meter")
        if not isinstance(meter_id, str):
            raise Refused("argument 'meter' (a meter id) is required")
        for sched in self.service.schedulers:
            for scheduled in sched.meters:
                if scheduled.meter_id == meter_id:
                    return sched, scheduled
        raise Refused(f"no meter {meter_id!r} on gateway {self.config.gateway.id}")

    def _dlms(self, args: dict[str, Any], what: str) -> tuple[DlmsMeter, asyncio.Lock]:
        _sched, scheduled = self._find(args)
        driver = scheduled.driver
        if not isinstance(driver, DlmsMeter):
            kind = type(driver).__name__.removesuffix("Meter")
            raise Refused(f"meter {scheduled.meter_id} is a {kind} meter: {what}")
        return driver, self._locks[scheduled.meter_id]

    async def ping(self, args: dict[str, Any]) -> Answer:
        service = self.service
        buffer = service.buffer
        assert buffer is not None
        from .service import VERSION

        return (
            "ok",
            "pong",
            {
                "version": VERSION,
                "gateway_ms": self.config.gateway.clock.virtual_ns(time.time_ns()) // 10**6,
                "backlog": buffer.count,
                "key_id": self.key.key_id,
                "meters": [m.meter_id for s in service.schedulers for m in s.meters],
            },
        )

    async def read_now(self, args: dict[str, Any]) -> Answer:
        sched, scheduled = self._find(args)
        captures, errors = await self._poll_once(sched, scheduled, _timeout(args))
        result = {"captures": [_capture_doc(c) for c in captures], "errors": errors}
        if captures and not errors:
            return "ok", f"meter {scheduled.meter_id} read", result
        if captures:
            return "ok", f"meter {scheduled.meter_id} read (partial)", result
        return "error", "; ".join(errors) or "no capture", result

    async def _poll_once(
        self, sched: BusScheduler, scheduled: ScheduledMeter, timeout: float
    ) -> tuple[list[Capture], list[str]]:
        """One poll of one meter through the scheduler's own code (captures to the writer:
        signed and buffered like any scheduled one); returns what it produced."""
        writer = self.service.writer
        assert writer is not None
        captures: list[Capture] = []
        errors: list[str] = []

        def sink(item: Capture | ReadError) -> None:
            if isinstance(item, Capture):
                captures.append(item)
            elif item.text:
                errors.append(item.text)
            writer.put(item)

        probe = ScheduledMeter(scheduled.meter_id, scheduled.interval_ns, scheduled.driver)
        probe.first = False
        one = BusScheduler(sched.name, [probe], sched.clock, sink)
        probe.next_slot = next_slot(one.virtual_now(), probe.interval_ns)
        try:
            await asyncio.wait_for(one._poll(probe), timeout)
        except TimeoutError:
            errors.append(f"meter {scheduled.meter_id}: no answer within {timeout:g}s")
        return captures, errors

    async def set_clock(self, args: dict[str, Any]) -> Answer:
        driver, lock = self._dlms(args, "only DLMS meters have a clock the agent sets")
        clock = driver.clock
        sets = clock.sets
        async with lock:
            session = await self._open(driver, _timeout(args))
            try:
                verdict = await clock.read(session, driver.gateway_ms, driver.assume_deviation)
                before = clock.drift_ms
                if verdict.reading.meter_ms is None:
                    return "error", f"meter {driver.meter_id}: clock unreadable: {clock.error}", {}
                # the set-clock policy's own SET, asked for now whatever the policy says
                clock._pending = verdict.reading
                await clock.correct(session, driver.gateway_ms, driver.assume_deviation)
            finally:
                await session.close()
        result = {"drift_before_ms": before, "drift_after_ms": clock.drift_ms}
        if clock.sets > sets:
            return "ok", f"meter {driver.meter_id}: clock set (drift was {before} ms)", result
        return "error", f"meter {driver.meter_id}: {clock.set_error}", result

    async def backfill(self, args: dict[str, Any]) -> Answer:
        driver, lock = self._dlms(
            args,
            "backfill reads a DLMS load profile by range; Modbus meters keep no standard "
            "profile object to read by time, IEC 62056-21 and DSMR meters push only "
            "their current values",
        )
        if driver.settings.load_profile is None:
            raise Refused(f"meter {driver.meter_id}: no load_profile configured")
        start, end = args.get("from_ms"), args.get("to_ms")
        if type(start) is not int or type(end) is not int or start > end:
            raise Refused("arguments 'from_ms' <= 'to_ms' (Unix ms) are required")
        if end - start > MAX_BACKFILL_MS:
            raise Refused(f"range longer than {MAX_BACKFILL_MS // 86_400_000} days: split it")
        reader = ProfileReader(driver.meter_id, driver.settings, None, driver.gateway_ms)
        reader.handed_ms = start - 1  # entries after this instant: the range's start
        async with lock:
            session = await self._open(driver, _timeout(args))
            try:
                rows = await asyncio.wait_for(
                    reader.read(session, driver.assume_deviation), _timeout(args)
                )
            finally:
                await session.close()
        writer = self.service.writer
        assert writer is not None
        entries = [e for e in rows.entries if start <= e[0] <= end]
        for captured_ms, values, flags in entries:
            writer.put(
                Capture(
                    driver.meter_id,
                    captured_ms,
                    values,
                    flags,
                    ClockSource.METER,
                    profile=reader.obis,
                )
            )
        result = {
            "entries": len(entries),
            "first_ms": entries[0][0] if entries else None,
            "last_ms": entries[-1][0] if entries else None,
            "errors": rows.errors,
        }
        if rows.errors and not entries:
            return "error", "; ".join(rows.errors), result
        return "ok", f"meter {driver.meter_id}: {len(entries)} profile entries captured", result

    async def _open(self, driver: DlmsMeter, timeout: float) -> DlmsSession:
        transport = make_transport(driver.settings, driver.host, driver.port, driver.timeout)
        session = DlmsSession(
            transport, driver.settings, driver.meter_id, state_dir=driver.state_dir
        )
        try:
            await asyncio.wait_for(transport.open(), timeout)
            await asyncio.wait_for(session.open(), timeout)
        except BaseException:
            await session.close()
            raise
        return session

    # -- push-config ---------------------------------------------------------------------

    async def push_config(self, args: dict[str, Any]) -> Answer:
        from .service import load_profiles

        text = args.get("config")
        if not isinstance(text, str) or not text.strip():
            raise Refused("argument 'config' (the new config file's text) is required")
        trial_s = args.get("trial_s", DEFAULT_TRIAL_S)
        if not isinstance(trial_s, int | float) or not 0 < trial_s <= 3600:
            raise Refused("argument 'trial_s' must be a number of seconds in (0, 3600]")
        old = self.service.config
        pushed = old.path.with_name(old.path.name + ".pushed")
        try:
            pushed.write_text(text, encoding="utf-8")
            try:
                new = load_config(pushed, str(old.gateway.clock))
            except ConfigError as exc:
                raise Refused(f"new config not valid: {exc}") from None
            changed = [
                name
                for name, a, b in (
                    ("[gateway] id", new.gateway.id, old.gateway.id),
                    ("[gateway] state_dir", new.gateway.state_dir, old.gateway.state_dir),
                    ("[mqtt]", new.mqtt, old.mqtt),
                    ("[buffer]", new.buffer, old.buffer),
                )
                if a != b
            ]
            if changed:
                raise Refused(
                    f"new config changes {', '.join(changed)}: that needs a restart of the "
                    "agent, not a pushed config"
                )
            profiles, issues = load_profiles(new.meters)
            if issues:
                raise Refused("new config not valid: " + "; ".join(str(i) for i in issues))
            await self._stop_polling()
            trial = await self._start_polling(new, profiles, trial_s)
            failed = {m: e for m, e in trial.items() if e}
            if not failed:
                backup = old.path.with_name(old.path.name + ".previous")
                with contextlib.suppress(OSError):
                    backup.write_bytes(old.path.read_bytes())
                os.replace(pushed, old.path)
                self.service.config = self.config = new
                self._start_tasks()
                return (
                    "ok",
                    f"new config applied: {len(new.meters)} meters read within {trial_s:g}s",
                    {"meters": sorted(trial), "previous": str(backup)},
                )
            log.warning(
                "pushed config failed its trial (%s): rolling back",
                "; ".join(f"{m}: {e}" for m, e in failed.items()),
            )
            await self._stop_polling()
            old_profiles, _ = load_profiles(old.meters)
            await self._start_polling(old, old_profiles, None)
            self._start_tasks()
            return (
                "rolled-back",
                f"new config could not read {len(failed)} of {len(trial)} meters within "
                f"{trial_s:g}s ({'; '.join(f'{m}: {e}' for m, e in sorted(failed.items()))}): "
                "the previous config runs again",
                {"failed": failed, "ok": sorted(m for m in trial if not trial[m])},
            )
        finally:
            pushed.unlink(missing_ok=True)

    async def _stop_polling(self) -> None:
        service = self.service
        tasks = list(service._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        service._tasks.clear()
        for conn in service.connections:
            with contextlib.suppress(Exception):
                await conn.close()
        service.connections = []
        service.schedulers.clear()
        self._locks.clear()

    async def _start_polling(
        self, config: AgentConfig, profiles: dict[str, Any], trial_s: float | None
    ) -> dict[str, str]:
        """Build the schedulers of ``config``; with ``trial_s``, read every meter once now
        (buses in parallel) and return meter -> error ("" when it read)."""
        from .service import build_meters

        service = self.service
        groups, service.connections = build_meters(config, profiles, service.buffer)
        by_id = {m.id: m for m in config.meters}
        for (driver, host, port), drivers in groups.items():
            scheduled = [
                ScheduledMeter(d.meter_id, by_id[d.meter_id].interval_ns, d) for d in drivers
            ]
            writer = service.writer
            assert writer is not None
            service.schedulers.append(
                BusScheduler(
                    f"{driver}://{host}:{port}" if port else f"{driver}:{host}",
                    scheduled,
                    config.gateway.clock,
                    writer.put,
                    until_ns=service.until_ns,
                )
            )
        self.lock_buses(service.schedulers)
        if trial_s is None:
            return {}
        outcome: dict[str, str] = {m.id: "not read" for m in config.meters}

        async def bus(sched: BusScheduler) -> None:
            for scheduled in sched.meters:
                captures, errors = await self._poll_once(sched, scheduled, trial_s)
                outcome[scheduled.meter_id] = "" if captures else "; ".join(errors) or "no capture"

        try:
            await asyncio.wait_for(asyncio.gather(*(bus(s) for s in service.schedulers)), trial_s)
        except TimeoutError:
            for meter_id, text in outcome.items():
                if text == "not read":
                    outcome[meter_id] = f"not read within {trial_s:g}s"
        return outcome

    def _start_tasks(self) -> None:
        service = self.service
        for sched in service.schedulers:
            service._tasks.append(asyncio.create_task(sched.run(), name=f"bus {sched.name}"))

    # -- rotate-key ----------------------------------------------------------------------

    def _rotate_key(self) -> tuple[Answer, Callable[[], None]]:
        """Make the new key (files ``*.new``); the reply (signed with the old key) carries
        its public key; only once the broker took the reply does the gateway switch."""
        keys_dir = self.config.keys_dir
        new = Ed25519PrivateKey.generate()
        priv_new = private_key_path(keys_dir).with_suffix(".key.new")
        pub_new = public_key_path(keys_dir).with_suffix(".pub.new")
        self._discard_new_key()
        pem = new.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pub_pem = new.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        write_exclusive(priv_new, pem, 0o600)
        write_exclusive(pub_new, pub_pem, 0o644)
        new_id = key_id(new.public_key())
        old_id = self.key.key_id

        def switch() -> None:
            buffer = self.service.buffer
            assert buffer is not None
            os.replace(pub_new, public_key_path(keys_dir))
            os.replace(priv_new, private_key_path(keys_dir))
            # the buffer signs under its lock: the next append uses the new key
            buffer._key = new
            self.key = GatewayKey(new, new.public_key(), new_id, private_key_path(keys_dir))
            log.info("signing key rotated: %s -> %s", old_id, new_id)

        answer: Answer = (
            "ok",
            f"new signing key {new_id} (replaces {old_id} once this reply is published)",
            {"old_key_id": old_id, "new_key_id": new_id, "public_key": pub_pem.decode()},
        )
        return answer, switch

    def _discard_new_key(self) -> None:
        keys_dir = self.config.keys_dir
        private_key_path(keys_dir).with_suffix(".key.new").unlink(missing_ok=True)
        public_key_path(keys_dir).with_suffix(".pub.new").unlink(missing_ok=True)


class _EverySeen(dict):  # type: ignore[type-arg]
    """The seen list when its file is unreadable: every id counts as seen."""

    def __contains__(self, key: object) -> bool:
        return True


def _timeout(args: dict[str, Any]) -> float:
    value = args.get("timeout_s", DEFAULT_TIMEOUT_S)
    if not isinstance(value, int | float) or not 0 < value <= 3600:
        raise Refused("argument 'timeout_s' must be a number of seconds in (0, 3600]")
    return float(value)


def _args_text(args: dict[str, Any]) -> str:
    """The arguments for the log: a pushed config only by its size."""
    shown = {k: (f"<{len(v)} chars>" if k == "config" else v) for k, v in args.items()}
    return json.dumps(shown, sort_keys=True) if shown else ""


def _capture_doc(capture: Capture) -> dict[str, Any]:
    return {
        "captured_ms": capture.captured_ms,
        "clock_source": int(capture.clock_source),
        "flags": int(capture.flags),
        "values": [
            {"obis": str(v.obis), "value": str(v.value), "unit": v.unit} for v in capture.values
        ],
    }


_HANDLERS: dict[str, Callable[[CommandAgent, dict[str, Any]], Awaitable[Answer]]] = {
    "ping": CommandAgent.ping,
    "read-now": CommandAgent.read_now,
    "backfill": CommandAgent.backfill,
    "set-clock": CommandAgent.set_clock,
    "push-config": CommandAgent.push_config,
}
