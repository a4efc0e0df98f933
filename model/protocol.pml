/*
 * sqs-redlock-worker: the per-message protocol as a Promela model, for SPIN.
 * model/README.md explains the abstraction; model/run.sh runs every check.
 *
 * What is modelled (each line names the code it stands for):
 *  - 3 Redis nodes (proctype Node): the Lua scripts of src/lock/{acquire,extend,release,complete,
 *    reclaim,fence}.ts, each one atomic step, as Redis runs a script; key expiry; crash and restart
 *    with or without data.
 *  - 2 workers (proctype Worker): src/handler/pipeline.ts runBatch for a batch of one message, with
 *    the Redlock calls of src/lock/redlock.ts (acquireMany, completeMany, releaseMany, the extender)
 *    and src/runtime/settle.ts (delete only processed / duplicate).
 *  - SQS (proctype Sqs and the receive/delete inlines): visibility, redelivery, ApproximateReceiveCount
 *    and the redrive to the DLQ; a delete with a stale receipt handle still deletes (standard queue).
 *  - A downstream that checks fencing tokens (inline write): it rejects a token lower than the last
 *    it accepted, as test/helpers/ledger.ts does.
 *  - With HANDOFF, a Publisher (in init): src/runtime/publisher.ts dispatch, the lock of the task key
 *    acquired for its pending window (src/lock/adopt.ts acquireForHandoff) and handed over with the
 *    message; the workers adopt it (ADOPT_SCRIPT, adoptBatch, acquireOrAdopt's fallback to a plain acquire).
 *
 * Time is ticks (proctype Clock). A lock's TTL is TTL ticks; the client's validity ends DRIFT ticks
 * earlier (quorum.ts validityMs: ttl - elapsed - drift), and a node may expire the key from then on
 * (bounded clock drift: Redlock's assumption).
 */

/* ---------------- switches (-D on the spin command line; run.sh sets them) ---------------- */
#ifndef MSGS
#define MSGS 1          /* messages; with 2, both share one lock key and have their own idempotency keys */
#endif
#ifndef ROUNDS
#define ROUNDS 2        /* receives per worker */
#endif
#ifndef TMAX
#define TMAX 5          /* the clock stops here */
#endif
#ifndef MAXRC
#define MAXRC 3         /* the queue's maxReceiveCount (RedrivePolicy) */
#endif
#ifndef FAULTS
#define FAULTS 2        /* faults of the bounded kinds (node crash, lost message, resend) per run */
#endif
/* HANDOFF: the message was dispatched by a Publisher and carries its lock (the task key is both the
 *   lock key and the idempotency key; MSGS must be 1). */
/* Fault switches, all off unless defined:
 *   F_NET      a call to a node is lost, or its reply is, or it is answered after the caller gave up
 *   F_RESEND   a client reconnects and resends an unanswered command (it runs twice)
 *   F_NCRASH   a node crashes and restarts, keeping its data (appendfsync always)
 *   F_DATALOSS a node crashes and restarts empty (the documented Redlock window)
 *   F_PAUSE    a worker pauses (or its handler ignores its signal) past its lock's validity
 *   F_WCRASH   a worker crashes at any step
 *   F_HFAIL    a handler fails (throws before its side effect)
 *   F_SHUTDOWN the shutdown deadline passes while a handler runs; then redlock.quit() may be called
 *   F_VISIBILITY  a message in flight becomes visible again at any time (heartbeat failed / expired)
 *   F_SQSFAIL  a DeleteMessage call fails
 * Checks:
 *   ONCE       assert that no effect is accepted twice
 * Old behaviour (the bugs fixed in the correctness issue; read in /tmp/base/src):
 *   BUG_MARKER_IN_LOCK   the completion marker lives in the lock key (lock key == dedup key)
 *   BUG_LATE_MARK        late completion marks any node where the lock is gone and fence == token
 *   BUG_SHUTDOWN_RELEASE the shutdown deadline releases the lock of a still running handler
 *   BUG_QUIT_RELEASE     redlock.quit() releases held locks
 *   BUG_ADOPT_NO_SWAP    adoption keeps the handed-over owner value (an owner-checked extend), as a
 *                        first design did: every delivery of the message carries that value
 */

#define N 3             /* Redis nodes */
#define Q 2             /* quorum.ts quorumOf(3) */
#define W 2             /* workers */
#ifndef TTL
#define TTL 3
#endif
#define DRIFT 1
/* A new counter's first token. Seeded from the clock, so tokens stay monotonic after a node came
 * back empty; without data loss a counter is never lost, and any constant seed behaves the same. */
#ifdef F_DATALOSS
#define SEED (now * C + 1)
#else
#define SEED 1
#endif
/* The Publisher's handoff: its owner value, its pending window (longer than a worker's TTL) and token. */
#define PV 200
#define PTTL (TTL + 1)
#define PTOK 1
#define C 4             /* fencing token = tick * C + count: fence seeds are the clock (acquire.ts ARGV[3]) */

/* The marker a message's completion writes and its acquire checks: its idempotency key (context.ts
 * markerKeyOf), or, in the old code, its lock key (every message here has lock key 0). */
#ifdef BUG_MARKER_IN_LOCK
#define MK(m) 0
#else
#define MK(m) (m)
#endif

/* ---------------- shared state ---------------- */
byte now;                       /* the clock */
byte faults;                    /* bounded faults used so far */
bool crashedOne;                /* at most one worker crash */

/* Redis: one lock key (all messages share it), its fencing counter, one marker per idempotency key */
byte lockv[N];                  /* owner value, 0 = no key */
byte lockexp[N];                /* the key may expire from this tick on (exec + TTL - DRIFT) */
byte fence[N];                  /* 0 = no counter */
bool marker[N * MSGS];          /* marker[n * MSGS + i] */
bool up[N];

/* SQS */
#define VISIBLE 0
#define INFLIGHT 1
#define DELETED 2
#define DLQ 3
byte msg[MSGS];
byte rc[MSGS];                  /* ApproximateReceiveCount */
byte holder[MSGS];              /* worker + 1 working on it (ghost, for F_VISIBILITY off) */

/* downstream (fencing-checked store of the resource the lock key guards) and ghosts */
byte dsMax;                     /* highest token accepted */
byte effect[MSGS];              /* accepted writes per message */
byte topToken;                  /* highest token a grant handed out */
byte nextVal = 1;               /* fresh owner values (redlock.ts randomUUID) */
bool adoptedOnce;               /* a worker was granted the handed-over lock (ghost) */

/* per worker, read by the mutual-exclusion monitor */
bool running[W];                /* handler started and not returned */
bool busy[W];                   /* its lock is held from the handler's start until completion is sent:
                                   the extender keeps it while the pipeline gets there */
bool lost[W];                   /* its lock's signal aborted (LockLostError) */
bool extFail[W];                /* its last extension reached no quorum: retried next tick (retryExtensionAt) */
byte dl[W];                     /* its lock's validity deadline (monotonic clock) */

/* ---------------- calls to nodes: one FIFO connection per (worker, node) ---------------- */
mtype = { ACQ, EXT, REL, CMP, CMPLATE, RCL, RAISE, ADOPT };
chan rq[W * N] = [4] of { mtype, byte, byte, byte, byte };   /* op, message, value, token, seq */
/* The answers of each worker's current call, per node (written by the node as it answers): the
 * promise each node's call settles in sendUntil (context.ts). */
#define PENDING 0
#define ANSWERED 1
#define FAILED 2
#define NOTSENT 3
byte ast[W * N];                /* PENDING, ANSWERED, FAILED (timed out), NOTSENT */
short ares[W * N];
byte curSeq[W];                 /* the call still being waited for; 0 = decided */
bool refAcq[W];                 /* acquire.ts undoLate: the last refused acquire ... */
byte refSeq[W];
byte refVal[W];                 /* ... and its owner value */
bool wdead[W];                  /* crashed or quit: no callbacks run */

/* ---------------- invariants ---------------- */
/* I3: no two workers run the lock key while both believe their lock valid (not aborted, in validity) */
#define believes(w) (running[w] && !lost[w] && now < dl[w])
active proctype Monitor() {
end: do
  :: atomic { believes(0) && believes(1) -> assert(false) }
  od
}

/* ---------------- the clock ---------------- */
/* Without F_PAUSE a held lock never outlives its validity under a live holder: the clock does not
 * pass a deadline of a lock still held and running (Redlock's bounded pause, and the extender renews
 * in time). With F_PAUSE it runs freely. */
#ifdef F_PAUSE
#define clockMay true
#else
#define clockMay (!(busy[0] && !lost[0] && now + 1 >= dl[0] && !extFail[0]) && !(busy[1] && !lost[1] && now + 1 >= dl[1] && !extFail[1]))
#endif
/* A lock key expires as the tick reaches lockexp: the earliest a node may expire it, a DRIFT before
 * its TTL (the node's clock may run fast by up to the drift allowance); never before the validity its
 * holder counts on. Expiring at the earliest moment is the adversarial choice for mutual exclusion; a
 * key that lingered longer only looks like one that expired unclaimed (RECLAIM_SCRIPT treats both alike). */
/* Without F_NET a call is answered within the tick it is sent in (round trips are much shorter
 * than a TTL): the clock waits until every connection to a live node is drained. */
#ifdef F_NET
#define netQuiet true
#else
#define quiet(j) (!up[j] || (empty(rq[j]) && empty(rq[N + j])))
#define netQuiet (quiet(0) && quiet(1) && quiet(2))
#endif
#define expireAt(j) if :: lockv[j] != 0 && now >= lockexp[j] -> lockv[j] = 0; lockexp[j] = 0 :: else -> skip fi
active proctype Clock() {
end: do
  :: atomic { now < TMAX && clockMay && netQuiet -> now++; extFail[0] = false; extFail[1] = false; expireAt(0); expireAt(1); expireAt(2) }
  od
}

/* ---------------- Redis nodes: the Lua scripts ---------------- */
/* A node's answer reaching its caller: recorded if it is still waited for; otherwise an acquire
 * answered after the decision that refused it is undone (acquire.ts undoLate: a release queued on the
 * same connection); other late answers are dropped. */
inline reply(c, s, o, a) {
  if
  :: s != 0 && s == curSeq[c / N] && ast[c] == PENDING -> ast[c] = ANSWERED; ares[c] = a
  :: s != 0 && o == ACQ && refAcq[c / N] && s == refSeq[c / N] && a > 0 && !wdead[c / N] ->
     if :: nfull(rq[c]) -> rq[c]!REL, 0, refVal[c / N], 0, 0 :: full(rq[c]) -> skip fi
  :: else -> skip
  fi
}

/* One script call, atomic as on Redis. m: message, v: owner value, t: token or fence seed. */
inline exec(n, c, op, m, v, t, s) {
  if
  :: op == ACQ ->
     /* acquire.ts ACQUIRE_SCRIPT: marker -> 0; SET NX or our own value -> granted; else held */
     if
     :: marker[n * MSGS + MK(m)] -> ans = 0
     :: else ->
        if
        :: lockv[n] == 0 || lockv[n] == v ->
           lockv[n] = v; lockexp[n] = now + TTL - DRIFT;
           if
           :: fence[n] == 0 -> fence[n] = t                   /* SET fence first NX */
           :: else -> fence[n]++                               /* INCR */
           fi;
           ans = fence[n]
        :: else -> ans = -1
        fi
     fi
  :: op == EXT ->                                              /* extend.ts EXTEND_SCRIPT */
     if
     :: lockv[n] == v -> lockexp[n] = now + TTL - DRIFT; ans = 1
     :: else -> ans = 0
     fi
  :: op == REL ->                                              /* release.ts RELEASE_SCRIPT */
     if
     :: lockv[n] == v -> lockv[n] = 0; ans = 1
     :: else -> ans = 0
     fi
  :: op == CMP || op == CMPLATE ->
     /* complete.ts COMPLETE_SCRIPT: where GET lock == ours, SET marker, DEL lock. The old code
      * (BUG_LATE_MARK) also marked a late lock where the key is gone and fence == its token. */
     if
     :: lockv[n] == v || (op == CMPLATE && lockv[n] == 0 && fence[n] == t) ->
        /* I4: a marker exists only for an effect that was accepted */
        assert(effect[m] > 0);
        marker[n * MSGS + MK(m)] = true; lockv[n] = 0; ans = 1
     :: else -> ans = 0
     fi
  :: op == RCL ->
     /* reclaim.ts RECLAIM_SCRIPT: marker -> 0; fence != token -> -1 (granted here since, if only by
      * our own acquire delivered late); ours -> PEXPIRE, 1; gone -> SET, 1; else -1 */
     if
     :: marker[n * MSGS + MK(m)] -> ans = 0
     :: fence[n] == t && lockv[n] == v -> lockexp[n] = now + TTL - DRIFT; ans = 1
     :: fence[n] == t && lockv[n] == 0 -> lockv[n] = v; lockexp[n] = now + TTL - DRIFT; ans = 1
     :: else -> ans = -1
     fi
  :: op == ADOPT ->
     /* adopt.ts ADOPT_SCRIPT: marker -> 0; the handed-over value (or our own, from an attempt answered
      * too late) -> SET ours PX ttl, 1; free -> -1; another owner -> -2 (-(pttl + 2) in the code) */
     if
     :: marker[n * MSGS + MK(m)] -> ans = 0
     :: lockv[n] == PV || lockv[n] == v -> lockv[n] = v; lockexp[n] = now + TTL - DRIFT; ans = 1
     :: lockv[n] == 0 -> ans = -1
     :: else -> ans = -2
     fi
  :: op == RAISE ->                                            /* fence.ts RAISE_FENCE_SCRIPT */
     if
     :: fence[n] < t -> fence[n] = t
     :: else -> skip
     fi;
     ans = 1
  fi
}

/* Run the next call of connection c (per-connection FIFO, as on one Redis connection). */
inline runCall(c) {
  if
  :: rq[c]?op, m, v, t, s -> exec(n, c, op, m, v, t, s);
     if
     :: reply(c, s, op, ans)
#ifdef F_NET
     :: faults < FAULTS -> faults++          /* ran, but the reply is lost */
#endif
     fi
#ifdef F_NET
  :: faults < FAULTS -> rq[c]?op, m, v, t, s; faults++   /* lost on the way: never runs */
#endif
#ifdef F_RESEND
  :: faults < FAULTS -> rq[c]?<op, m, v, t, s>; exec(n, c, op, m, v, t, s); faults++
     /* ran, the connection dropped before the reply; ioredis resends it on reconnect */
#endif
  fi;
  op = 0; m = 0; v = 0; t = 0; s = 0; ans = 0
}

proctype Node(byte n) {
  mtype op; byte m, v, t, s; short ans; byte c;
end: do
  :: atomic { up[n] && nempty(rq[n]) -> c = n; runCall(c); c = 0 }
  :: atomic { up[n] && nempty(rq[N + n]) -> c = N + n; runCall(c); c = 0 }
#if defined(F_NCRASH) || defined(F_DATALOSS)
  :: atomic { up[n] && faults < FAULTS -> up[n] = false; faults++ }
  :: atomic { !up[n] -> up[n] = true;
       /* the calls queued to it may die with the connection (each caller timed out on them) */
       if
       :: skip
       :: do :: rq[n]?_, _, _, _, _ :: empty(rq[n]) -> break od;
          do :: rq[N + n]?_, _, _, _, _ :: empty(rq[N + n]) -> break od
       fi;
#ifdef F_DATALOSS
       if
       :: lockv[n] = 0; lockexp[n] = 0; fence[n] = 0;
          c = 0; do :: c < MSGS -> marker[n * MSGS + c] = false; c++ :: else -> break od; c = 0
       :: skip
       fi
#endif
     }
#endif
  od
}

/* ---------------- SQS ---------------- */
#ifdef F_VISIBILITY
#define mayExpire(m) true
#else
#define mayExpire(m) (holder[m] == 0)
#endif
active proctype Sqs() {
end: do
  /* visibility timeout: a message in flight is visible again. Without F_VISIBILITY only once its
   * worker let it go (put back, or crashed): the heartbeat keeps it invisible meanwhile. */
  :: atomic { msg[0] == INFLIGHT && mayExpire(0) -> msg[0] = VISIBLE }
  :: atomic { MSGS > 1 && msg[MSGS - 1] == INFLIGHT && mayExpire(MSGS - 1) -> msg[MSGS - 1] = VISIBLE }
  od
}

/* ---------------- workers ---------------- */
/* lock states (src/lock/lock.ts) */
#define L_NONE 0
#define L_HELD 1
#define L_LOST_EXPIRED 2
#define L_LOST_NOTOWNER 3
#define L_ENDED 4

#if defined(F_NET) || defined(F_NCRASH) || defined(F_DATALOSS) || defined(F_RESEND)
#define mayTimeOut true
#else
#define mayTimeOut false
#endif

#ifdef F_WCRASH
#define crashpoint if :: !crashedOne -> crashedOne = true; goto crashed :: else -> skip fi
#else
#define crashpoint skip
#endif

/* The handler's side effect, on a downstream that checks fencing tokens (test/helpers/ledger.ts apply):
 * a token lower than the last accepted is rejected; the handler returns either way. */
#ifdef ONCE
#define onceCheck assert(effect[m] == 0)     /* I5: no effect accepted twice */
#else
#define onceCheck skip
#endif
#define write \
    if \
    :: tok >= dsMax -> onceCheck; dsMax = tok; effect[m]++ \
    :: else -> skip \
    fi; \
    wrote = true

proctype Worker(byte w) {
  byte m, v, tok, seq, k, started, rounds, i, cnt, cnt2, top;
  byte lstate;
  bool late, ok, shut, quitted, wrote;
  mtype qop; byte qm, qv, qt, qs, qc; short ans;    /* a call run at once (deliverNow) */

/* sendUntil (context.ts): send op to the nodes marked PENDING; collect answers until `enough`, all
 * answered, or those left time out (a node not waited for stays PENDING: its answer comes late). */
#define send(op, t) \
    atomic { sendAll(op, t) }

/* Without F_NET and F_RESEND a call reaches every live node at once: the workers' calls are ordered
 * alike on every node (split votes between two acquirers need F_NET's delays). */
#if defined(F_NET) || defined(F_RESEND)
#define deliverNow skip
#else
#define deliverNow \
    i = 0; \
    do \
    :: i < N -> \
       do \
       :: up[i] && nempty(rq[w * N + i]) -> \
          rq[w * N + i]?qop, qm, qv, qt, qs; qc = w * N + i; exec(i, qc, qop, qm, qv, qt, qs); reply(qc, qs, qop, ans) \
       :: empty(rq[w * N + i]) -> break \
       :: !up[i] -> break \
       od; i++ \
    :: else -> break \
    od; \
    i = 0; qop = 0; qm = 0; qv = 0; qt = 0; qs = 0; qc = 0; ans = 0
#endif

#define sendAll(op, t) \
    seq++; curSeq[w] = seq; i = 0; \
    do \
    :: i < N -> \
       if \
       :: ast[w * N + i] == PENDING -> \
          if :: nfull(rq[w * N + i]) -> rq[w * N + i]!op, m, v, t, seq :: full(rq[w * N + i]) -> ast[w * N + i] = FAILED fi \
       :: else -> skip \
       fi; i++ \
    :: else -> break \
    od; i = 0; \
    deliverNow

#define collect(enough) \
    do \
    :: atomic { (enough) || (ast[w * N + 0] != PENDING && ast[w * N + 1] != PENDING && ast[w * N + 2] != PENDING) -> curSeq[w] = 0; break } \
    :: atomic { mayTimeOut && !(enough) && ast[w * N + 0] == PENDING -> ast[w * N + 0] = FAILED } \
    :: atomic { mayTimeOut && !(enough) && ast[w * N + 1] == PENDING -> ast[w * N + 1] = FAILED } \
    :: atomic { mayTimeOut && !(enough) && ast[w * N + 2] == PENDING -> ast[w * N + 2] = FAILED } \
    od

#define clearCall ast[w * N + 0] = NOTSENT; ast[w * N + 1] = NOTSENT; ast[w * N + 2] = NOTSENT; ares[w * N + 0] = 0; ares[w * N + 1] = 0; ares[w * N + 2] = 0; cnt = 0; i = 0
#define allPending ast[w * N + 0] = PENDING; ast[w * N + 1] = PENDING; ast[w * N + 2] = PENDING; ares[w * N + 0] = 0; ares[w * N + 1] = 0; ares[w * N + 2] = 0
#define count(cond) cnt = 0; i = 0; do :: i < N -> if :: (cond) -> cnt++ :: else -> skip fi; i++ :: else -> break od; i = 0
#define okIs(j, a) (ast[w * N + j] == ANSWERED && ares[w * N + j] == (a))
#define nOk(a) ((okIs(0, a)) + (okIs(1, a)) + (okIs(2, a)))
#define granted(j) (ast[w * N + j] == ANSWERED && ares[w * N + j] > 0)
#define nGranted (granted(0) + granted(1) + granted(2))

/* release.ts rollback: fire and forget, queued behind the call on the same connection */
#define rollbackWhere(cond) \
    i = 0; \
    do \
    :: i < N -> \
       if :: (cond) -> if :: nfull(rq[w * N + i]) -> rq[w * N + i]!REL, m, v, 0, 0 :: full(rq[w * N + i]) -> skip fi :: else -> skip fi; i++ \
    :: else -> break \
    od; i = 0

/* releaseBatch: resolves once a quorum answered */
#define releaseAll \
    allPending; send(REL, 0); collect(nOk(0) + nOk(1) >= Q); clearCall

#define received \
    if \
    :: rc[m] >= MAXRC -> msg[m] = DLQ; goto nextRound \
    :: else -> rc[m]++; msg[m] = INFLIGHT; holder[m] = w + 1 \
    fi

  do
  :: rounds < ROUNDS -> rounds++;
     /* ---- ReceiveMessage: a visible message; the redrive moves it to the DLQ past maxReceiveCount ---- */
end: if
     :: atomic { msg[0] == VISIBLE -> m = 0; received }
     :: atomic { MSGS > 1 && msg[MSGS - 1] == VISIBLE -> m = MSGS - 1; received }
     fi;
     crashpoint;
#ifdef HANDOFF
     /* ---- adoptMany (adopt.ts adoptBatch), one attempt; 'expired' falls back to a plain acquire ---- */
     atomic {
#ifdef BUG_ADOPT_NO_SWAP
       v = PV;                /* the old design: the handed-over value stays the owner value */
#else
       v = nextVal; nextVal++;
#endif
       started = now; lstate = L_NONE; late = false; shut = false; wrote = false;
       allPending
     };
     send(ADOPT, 0);
     collect(nOk(0) > 0 || nOk(1) >= Q);
     crashpoint;
     atomic {
       if
       :: okIs(0, 0) || okIs(1, 0) || okIs(2, 0) ->
          /* 'done': undo every swap that is or may be ours (answered 1, failed, or not waited for) */
          rollbackWhere(!okIs(i, -1) && !okIs(i, -2) && !okIs(i, 0)); clearCall; started = 0;
          goto duplicate
       :: else ->
          if
          :: nOk(1) >= Q && now < started + TTL - DRIFT ->
             /* I2 for a handoff: the token handed over is still the newest (no one was granted the key
              * since the Publisher), and a handed-over value proves ownership only once */
             assert(PTOK == topToken);
#ifndef BUG_ADOPT_NO_SWAP
             assert(!adoptedOnce);      /* (the old design breaks this by design: see what I3 says of it) */
#endif
             adoptedOnce = true;
             tok = PTOK; lstate = L_HELD; dl[w] = started + TTL - DRIFT; lost[w] = false;
             clearCall; started = 0;
             goto locked
          :: else ->
             /* refused: adopted too late, held by another owner, expired, or too few answers */
             rollbackWhere(!okIs(i, -1) && !okIs(i, -2) && !okIs(i, 0));
             if
             :: nOk(-2) > N - Q || (nOk(1) >= Q) || !(nOk(-1) + nOk(-2) > N - Q) ->
                clearCall; started = 0; goto putBack
             :: else -> clearCall; started = 0        /* expired: acquire the key afresh */
             fi
          fi
       fi
     };
#endif
     /* ---- acquireMany (acquire.ts acquireBatch), one attempt ---- */
     atomic {
       v = nextVal; nextVal++; started = now; lstate = L_NONE; late = false; shut = false; wrote = false;
       allPending
     };
     send(ACQ, SEED);
     collect(nOk(0) > 0 || nGranted >= Q);
     crashpoint;
     atomic {
       if
       :: okIs(0, 0) || okIs(1, 0) || okIs(2, 0) ->
          /* 'done': the idempotency key's marker exists: a duplicate. Undo what is or may be ours. */
          rollbackWhere(granted(i) || ast[w * N + i] == FAILED);
          refAcq[w] = true; refSeq[w] = seq; refVal[w] = v; clearCall; started = 0;
          goto duplicate
       :: nGranted < Q ->
          /* held elsewhere or no quorum: backed off, never deleted */
          rollbackWhere(granted(i) || ast[w * N + i] == FAILED);
          refAcq[w] = true; refSeq[w] = seq; refVal[w] = v; clearCall; started = 0;
          goto putBack
       :: else ->
          /* the token is the highest counter among the granting nodes */
          top = 0; i = 0;
          do
          :: i < N -> if :: granted(i) && ares[w * N + i] > top -> top = ares[w * N + i] :: else -> skip fi; i++
          :: else -> break
          od;
          tok = top; top = 0;
          /* nodes that granted below it are written back (fence.ts raiseFences) */
          count(granted(i) && ares[w * N + i] < tok); cnt2 = nGranted - cnt;
          i = 0;
          do
          :: i < N -> if :: granted(i) && ares[w * N + i] < tok -> ast[w * N + i] = PENDING :: else -> ast[w * N + i] = NOTSENT fi; i++
          :: else -> break
          od
       fi
     };
     if
     :: cnt > 0 ->
        send(RAISE, tok);
        collect(false);
        atomic { count(okIs(i, 1)); cnt2 = cnt2 + cnt }
     :: else -> skip
     fi;
     atomic {
       if
       :: cnt2 < Q || now >= started + TTL - DRIFT ->
          /* fencing token on too few nodes, or granted too late (no validity left): not granted */
          i = 0;
          do :: i < N -> if :: nfull(rq[w * N + i]) -> rq[w * N + i]!REL, m, v, 0, 0 :: full(rq[w * N + i]) -> skip fi; i++
             :: else -> break od;
          clearCall; cnt2 = 0; started = 0;
          goto putBack
       :: else ->
          /* I2: a grant's token is above every token handed out before for the key (fencing is
           * monotonic across the quorum), so the downstream never prefers an older holder */
          assert(tok > topToken);
          topToken = tok;
          lstate = L_HELD; dl[w] = started + TTL - DRIFT; lost[w] = false;
          clearCall; cnt2 = 0; started = 0
       fi
     };
locked:
     crashpoint;
     /* ---- run (pipeline.ts runOne) ---- */
     if
     :: now >= dl[w] -> goto lockLost              /* validity ran out before the handler started */
     :: else -> running[w] = true; busy[w] = true
     fi;
     do
     /* the extender (extender.ts, redlock.ts #extendLocks / #settleExtension) */
     :: lstate == L_HELD && now < dl[w] && now + 1 >= dl[w] && !extFail[w] ->   /* renewed before validity runs out */
        atomic { allPending; started = now };
        send(EXT, 0);
        collect(false);
        atomic {
          if
          :: lstate != L_HELD -> skip
          :: nOk(1) >= Q && now < dl[w] && now < started + TTL - DRIFT -> dl[w] = started + TTL - DRIFT
          :: nOk(1) >= Q -> lstate = L_LOST_EXPIRED; lost[w] = true
          :: nOk(0) > N - Q -> lstate = L_LOST_NOTOWNER; lost[w] = true
          :: else -> if :: now >= dl[w] -> lstate = L_LOST_EXPIRED; lost[w] = true :: else -> extFail[w] = true fi
          fi;
          clearCall; started = 0
        }
     /* the extender's timer notices that validity ran out: the signal aborts */
     :: atomic { lstate == L_HELD && now >= dl[w] -> lstate = L_LOST_EXPIRED; lost[w] = true }
     /* the handler's side effect: a write fenced by its token (test/helpers/ledger.ts apply). It
      * checks its signal first; without F_PAUSE the check and the write are one step. */
     :: !wrote ->
#ifdef F_HFAIL
        if
        :: true -> goto handlerFailed                 /* throws before its side effect */
        :: true -> skip
        fi;
#endif
        if
        :: atomic { !lost[w] && now < dl[w] -> write }      /* its signal says the lock is valid */
#ifdef F_PAUSE
        :: true -> crashpoint; atomic { write }              /* checked, then paused; or ignores it */
#endif
        :: atomic { lost[w] || now >= dl[w] -> goto handlerFailed }   /* told: gives up */
        fi;
        crashpoint;
        break                                 /* the handler returns */
#ifdef F_SHUTDOWN
     /* stop(): the deadline passes while the handler runs; its signal aborts (shutdown) */
     :: !shut ->
        shut = true;
#ifdef BUG_SHUTDOWN_RELEASE
        /* old pipeline.ts settleOrShutdown: 'aborted' at once, the lock released under the running
         * handler (the release does not abort the lock's signal; the extender stops) */
        lstate = L_ENDED; busy[w] = false;
        releaseAll;
        holder[m] = 0;
#endif
        if
        :: true -> goto handlerFailed        /* it honours the signal and gives up */
        :: true -> skip                       /* it runs on */
        fi
     :: shut && !quitted ->
        /* redlock.quit() after stop() resolved without this batch */
        quitted = true;
        holder[m] = 0;         /* the process is going away: nothing extends the visibility any more */
#ifdef BUG_QUIT_RELEASE
        if :: lstate == L_HELD -> lstate = L_ENDED; releaseAll :: else -> skip fi
#else
        /* quit() aborts held locks and releases nothing: they expire on the nodes */
        if :: lstate == L_HELD -> lstate = L_LOST_EXPIRED; lost[w] = true :: else -> skip fi
#endif
#endif
     od;
     running[w] = false;
     /* ---- the handler succeeded (pipeline.ts runOne after the handler; #flush; #completed) ---- */
     if
     :: quitted -> wdead[w] = true; busy[w] = false; goto gone         /* the clients are closed */
     :: else -> skip
     fi;
     atomic {
       late = !(lstate == L_HELD && now < dl[w]) && (lstate == L_HELD || lstate == L_LOST_EXPIRED);
       if
       :: !(lstate == L_HELD && now < dl[w]) && !late -> goto lockLost
       :: else -> skip
       fi
     };
     crashpoint;
     /* completeMany(claimExpired: true): held locks completed; late ones reclaimed first */
     if
     :: lstate == L_HELD && now < dl[w] ->
        atomic { lstate = L_ENDED; allPending };
        send(CMP, tok);
        busy[w] = false;
        collect(nOk(1) >= Q);
        atomic { ok = (nOk(1) >= Q); clearCall }
     :: else ->
        if
        :: lstate == L_HELD || lstate == L_LOST_EXPIRED ->
#ifdef BUG_LATE_MARK
           /* old complete.ts: the late lock marked where the key is gone and fence == token */
           atomic { allPending; lstate = L_ENDED };
           send(CMPLATE, tok);
           busy[w] = false;
           collect(nOk(1) >= Q);
           atomic { ok = (nOk(1) >= Q); clearCall }
#else
           /* reclaim.ts reclaimBatch: ours again on a quorum within validity, else rolled back */
           atomic { allPending; started = now; lstate = L_ENDED };
           send(RCL, tok);
           busy[w] = false;
           collect(nOk(1) >= Q);
           if
           :: atomic { nOk(1) >= Q && now < started + TTL - DRIFT -> allPending };
              send(CMP, tok);
              collect(nOk(1) >= Q);
              atomic { ok = (nOk(1) >= Q); clearCall; started = 0 }
           :: else ->
              atomic { rollbackWhere(ast[w * N + i] != ANSWERED || ares[w * N + i] == 1); ok = false; clearCall; started = 0 }
           fi
#endif
        :: else -> ok = false; busy[w] = false
        fi
     fi;
     crashpoint;
     if
     :: !ok -> atomic { allPending }; send(REL, 0); collect(nOk(0) + nOk(1) >= Q); clearCall   /* best effort */
     :: else -> skip
     fi;
     if
     :: late && !ok -> holder[m] = 0; goto nextRound     /* lock_lost: not deleted, not marked */
     :: else -> skip                                     /* processed (marked or not): deleted */
     fi;
     crashpoint;
     goto deleteIt;

handlerFailed:
     running[w] = false; busy[w] = false;
     if :: quitted -> wdead[w] = true; goto gone :: else -> skip fi;
lockLost:
     /* failed / aborted / lock_lost: released, not deleted (settle.ts) */
     running[w] = false; busy[w] = false;
     if
     :: lstate == L_HELD || lstate == L_LOST_EXPIRED || lstate == L_LOST_NOTOWNER ->
        lstate = L_ENDED; releaseAll
     :: else -> skip
     fi;
putBack:
     holder[m] = 0;
     goto nextRound;

duplicate:
deleteIt:
     /* settle.ts: DeleteMessage (a stale receipt handle still deletes on a standard queue) */
     atomic {
       if
#ifdef F_SQSFAIL
       :: true -> skip                                   /* the call failed: redelivered later */
#endif
       :: msg[m] != DLQ ->
          /* I1: deleted only after its effect was accepted (as a success, or as a duplicate of one) */
          assert(effect[m] > 0);
          msg[m] = DELETED
       :: msg[m] == DLQ -> skip
       fi;
       holder[m] = 0
     };
nextRound:
     skip
  :: rounds >= ROUNDS -> break
  od;
  goto gone;
crashed:
  /* a crashed worker runs nothing more; its calls already sent may still run on the nodes */
  wdead[w] = true;
  running[w] = false; busy[w] = false;
  holder[m] = 0;
gone:
  skip
}

init {
  byte c0;
  atomic {
    up[0] = true; up[1] = true;
#ifndef START_DOWN
    up[2] = true;          /* START_DOWN: node 2 starts crashed (one fault spent before the run) */
#endif
#ifdef HANDOFF
    /* Publisher.dispatch: the task key's lock, granted on a quorum (or every node) for the pending
     * window, then the message sent with it. */
    topToken = PTOK;
    if
    :: lockv[0] = PV; lockv[1] = PV; lockv[2] = PV
    :: lockv[0] = PV; lockv[1] = PV
    :: lockv[1] = PV; lockv[2] = PV
    :: lockv[0] = PV; lockv[2] = PV
    fi;
    c0 = 0;
    do
    :: c0 < N -> if :: lockv[c0] == PV -> lockexp[c0] = PTTL - DRIFT; fence[c0] = PTOK :: else -> skip fi; c0++
    :: else -> break
    od;
#endif
    run Node(0); run Node(1); run Node(2);
    run Worker(0); run Worker(1)
  }
}
