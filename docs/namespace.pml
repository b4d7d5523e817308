/* The namespace protocol that filemap implements on Linux (crates/filemap/src/sys/unix/
 * object.rs), modelled in Promela: one name, NPROC processes doing open_or_create / close /
 * crash in any interleaving. It comes from the project's design notes
 * (shared/design/namespace.pml); .ci/run checks it with spin on every run.
 *
 * How the model maps to the code:
 *   - "build tmp, LOCK_SH"      openat(O_TMPFILE), fallocate, record, flock(LOCK_SH)
 *   - the namespace lock        Mutex + flock(LOCK_EX) on the namespace directory
 *   - "publish"                 linkat(/proc/self/fd/N, name), which fails with EEXIST while
 *                               the name exists; the code tries the link first and examines
 *                               the name only on EEXIST. Under the namespace lock that is the
 *                               same atomic step as the model's test-then-publish.
 *   - stale test                flock(LOCK_EX|LOCK_NB) succeeds: unlink the name
 *   - close                     LOCK_EX|LOCK_NB, unlink only if the name is still our inode
 *   - crash                     the kernel drops every flock of the process
 * `rm` (unlinking a live name on request) is left out on purpose: it is the one operation
 * that leaves holders with an object the name no longer points to.
 *
 * Run: spin -a namespace.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -m500000
 */
#define NPROC 3
#define MAXI 6
#define NONE 255

byte P = NONE;                 /* the inode the name points to */
bool sh[MAXI * NPROC];         /* sh[i*NPROC+p]: process p holds LOCK_SH on inode i */
byte ex[MAXI] = NONE;               /* process holding LOCK_EX on inode i, or NONE */
byte nslock = NONE;            /* holder of the namespace lock */
byte h[NPROC] = NONE;               /* the inode process p holds a handle on, or NONE */
byte next_inode = 0;

inline others_hold(i, p, r) {  /* r = some process other than p holds SH or EX on i */
  r = false;
  byte q = 0;
  do
  :: q < NPROC -> if :: q != p && sh[i*NPROC+q] -> r = true :: else -> skip fi; q++
  :: q >= NPROC -> break
  od;
  if :: ex[i] != NONE && ex[i] != p -> r = true :: else -> skip fi
}

inline crash(p) {
  atomic {
    byte j = 0;
    do
    :: j < MAXI -> sh[j*NPROC+p] = false; if :: ex[j] == p -> ex[j] = NONE :: else -> skip fi; j++
    :: j >= MAXI -> break
    od;
    if :: nslock == p -> nslock = NONE :: else -> skip fi;
    h[p] = NONE
  }
}

proctype Proc(byte p) {
  byte t; bool busy;

end_idle:
  do
  :: atomic { h[p] == NONE && next_inode < MAXI ->   /* open_or_create: build tmp, LOCK_SH */
       t = next_inode; next_inode++; sh[t*NPROC+p] = true };
     if :: crash(p); goto end_idle :: skip fi;
     atomic { nslock == NONE -> nslock = p };
     if :: crash(p); goto end_idle :: skip fi;
     if
     :: P != NONE ->
        atomic {
          others_hold(P, p, busy);
          if
          :: !busy -> /* LOCK_EX|LOCK_NB succeeded: stale; unlink it, publish ours */
             P = NONE
          :: busy ->  /* live: LOCK_SH|LOCK_NB on it must succeed */
             assert(ex[P] == NONE || ex[P] == p);
             sh[P*NPROC+p] = true; h[p] = P;
             sh[t*NPROC+p] = false   /* drop the temporary */
          fi
        }
     :: else -> skip
     fi;
     if :: crash(p); goto end_idle :: skip fi;
     atomic {
       if
       :: h[p] == NONE -> P = t; h[p] = t     /* renameat2(tmp, name, NOREPLACE) */
       :: else -> skip
       fi
     };
     if :: crash(p); goto end_idle :: skip fi;
     atomic { nslock = NONE }
  :: h[p] != NONE ->                              /* close */
     atomic { nslock == NONE -> nslock = p };
     if :: crash(p); goto end_idle :: skip fi;
     atomic {
       sh[h[p]*NPROC+p] = false;                   /* conversion drops SH first */
       others_hold(h[p], p, busy);
       if
       :: !busy -> ex[h[p]] = p; if :: P == h[p] -> P = NONE :: else -> skip fi; ex[h[p]] = NONE
       :: else -> skip
       fi;
       h[p] = NONE
     };
     atomic { nslock = NONE }
  :: h[p] != NONE -> crash(p)
  od
}

/* invariants, checked in every state */
active proctype Monitor() {
  byte a, b;
end_mon:
  do
  :: atomic {
       a = 0;
       do
       :: a < NPROC ->
          if
          :: h[a] != NONE ->
             assert(P == h[a]);                      /* the name points at every held object */
             assert(sh[h[a]*NPROC+a]);               /* a handle implies a lock */
             b = 0;
             do
             :: b < NPROC -> assert(h[b] == NONE || h[b] == h[a]); b++
             :: b >= NPROC -> break
             od
          :: else -> skip
          fi; a++
       :: a >= NPROC -> break
       od
     }
  od
}

init {
  atomic {
    byte i = 0;
    do :: i < MAXI -> ex[i] = NONE; i++ :: i >= MAXI -> break od;
    h[0] = NONE; h[1] = NONE; h[2] = NONE;
    run Proc(0); run Proc(1); run Proc(2)
  }
}
