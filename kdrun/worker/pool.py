"""The worker's slots as a pool of device units, so one job can train on several (DDP).

A unit is one slot. On a CPU worker (`--cpu --slots K`) each of the K slots is a unit, and a
`gpus: 2` job runs as 2 CPU ranks. On GPUs each `--gpu` device is a unit; with `--slots S > 1`
every GPU has S slots, and a group job's ranks take one slot on each of N *distinct* GPUs
(two ranks on one GPU would only share it), leaving the GPUs' other slots to 1-GPU jobs as
`--slots` asks. So a worker's capacity is its number of GPUs (CPU: its slots), whatever S.

A slot's thread claims, holding the pool lock, with the units free now (its own included):
the claim and the lending of the extra units happen under one lock, so two threads never
promise the same unit. A lent slot's thread claims nothing until the group job ends.
"""

from __future__ import annotations

import threading

from kdrun.worker.supervisor import Slot


class Pool:
    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        self.user: dict[int, int] = {}  # busy slot -> the slot whose thread runs its job
        self.lock = threading.Condition()

    def _unit(self, i: int) -> str | int:
        """What ranks must not share: the GPU; on the CPU, the slot itself."""
        device = self.slots[i].device
        return i if device == "cpu" else device

    @property
    def capacity(self) -> int:
        """The widest job this worker can ever run."""
        return len({self._unit(i) for i in range(len(self.slots))})

    def lent(self, i: int) -> bool:
        """Slot i's unit trains another slot's group job."""
        return self.user.get(i, i) != i

    def _pick(self, i: int, n: int) -> list[int]:
        """Slot i and up to n-1 free slots on other units (distinct GPUs), i first."""
        picked, units = [i], {self._unit(i)}
        for j in range(len(self.slots)):
            if len(picked) == n:
                break
            if j not in self.user and self._unit(j) not in units:
                picked.append(j)
                units.add(self._unit(j))
        return picked

    def idle(self, i: int) -> int:
        """Units free now for a job claimed by slot i (its own included; none while it is
        lent). Call holding lock."""
        return 0 if i in self.user else len(self._pick(i, len(self.slots)))

    def name(self, i: int, n: int) -> str:
        """The worker name an n-unit job claimed by slot i records. Call holding lock."""
        return self._name_of(self._pick(i, n))

    def _name_of(self, picked: list[int]) -> str:
        """The first slot's own name, or for a group `host:pid:cuda0+cuda1#k` (CPU:
        `host:pid:cpu#0+1`, the slots), so `status` shows the job once with its devices."""
        own = self.slots[picked[0]]
        if len(picked) == 1:
            return own.name
        base, _, tail = own.name.rpartition(":")
        device, _, k = tail.partition("#")
        if own.device == "cpu":
            ks = (self.slots[j].name.rpartition("#")[2] for j in picked)
            return f"{base}:{device}#{'+'.join(ks)}"
        devices = (self.slots[j].device.replace(":", "") for j in picked)
        return f"{base}:{'+'.join(devices)}#{k}"

    def take(self, i: int, n: int) -> Slot:
        """Mark slot i and n-1 more as running slot i's job, and give that job's Slot (its
        `group` lists the ranks' devices, slot i's first). Call holding lock, right after the
        claim that `idle(i) >= n` allowed."""
        picked = self._pick(i, n)
        if i in self.user or len(picked) < n:
            raise RuntimeError(f"pool: {n} units promised, only {len(picked)} free")
        for j in picked:
            self.user[j] = i
        slot = self.slots[i]
        if n == 1:
            return slot
        return Slot(self._name_of(picked), slot.device, slot.threads,
                    [self.slots[j].device for j in picked])

    def give_back(self, i: int) -> None:
        """Slot i's job ended: its units are free again, and lent slots' threads wake."""
        with self.lock:
            for j in [j for j, user in self.user.items() if user == i]:
                del self.user[j]
            self.lock.notify_all()

    def wait_returned(self, i: int, timeout: float) -> None:
        """Block while slot i is lent to a group job (at most `timeout` seconds)."""
        with self.lock:
            if self.lent(i):
                self.lock.wait_for(lambda: not self.lent(i), timeout)
