/* Native trace events (part of probes._native; included by probes/_native.c).
 *
 * A probe-event line (probes.events.attach) whose fetch arguments compile
 * (probes/events/_native.py) runs them here, at the hit, and writes one record
 * to a Ring; Python drains the ring in batches into the same Event objects the
 * Python path makes (probes/events/_attach.py). The runtime is the one of
 * probes/events/_fetch.py, the reference: loads, dereferences, stores, string
 * reads up to MAX_STRING_SIZE; what needs no guest state at the hit (the print
 * conversions, symbols, $comm, constant strings) is done at the drain.
 *
 * Program: per argument, int64 words
 *     load_op, load_param, nderef, deref_1 .. deref_n, store_op, size, count, offset, sext
 * (sext, captures only: sign-extend the result from size bytes).
 *
 * A return probe's entry runs its capture program into ri.data: u64 entry
 * time, u64 function, then per capture (a number) u64 ok, u64 value. At the
 * return L_CAPT loads the number at a slot's byte offset (past the two words).
 *
 * Record (8-byte aligned): u32 size, u16 trace id, u16 context (index into the
 * ring's (machine, task) list), u64 ts, u64 ip, u64 caller, u64 entry_ts; then
 * per argument either ARG_FAULT (the whole argument is None: a failed
 * dereference) or its elements: a number is (u64 0 or 1 = fault, u64 value), a
 * string is (u64 length or ELEM_FAULT, bytes padded to 8).
 *
 * Reads (Memory.read's semantics: any mapped byte whatever its protection, a
 * fault when unmapped, a breakpoint's original byte): through the core's cache
 * of host spans of non-executable memory (no patch can be there), else with the
 * GIL through Python. A hit without the GIL that needs Python (a cache miss,
 * a full ring, a new task) leaves nothing written and takes the GIL path.
 */

enum { L_FAULT = 0, L_REG = 1, L_IMM = 2, L_STACK = 3, L_STACKP = 4, L_RETVAL = 5, L_ARG = 6,
       L_CAPT = 7, L_DUR = 8 };
enum { S_RAW = 0, S_MEM = 1, S_STR = 2 };
#define NEED_GIL (-2)
#define ARG_FAULT 0xFFFFFFFFFFFFFFFFULL
#define ELEM_FAULT 0xFFFFFFFFFFFFFFFEULL
#define REC_HEAD 40
#define MAX_STR 4095            /* MAX_STRING_SIZE without its NUL */
#define NREGS 18                /* rax..r15, rip, eflags */
#define R_EFLAGS 17

static const int arg_regs[6] = {7, 6, 2, 1, 8, 9};   /* rdi rsi rdx rcx r8 r9 */
static const char *reg_names[NREGS] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                       "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                                       "rip", "eflags"};

/* --- Ring ----------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    char *buf;
    Py_ssize_t cap, len;
    unsigned long long records;    /* records written, ever */
    PyObject *drain;               /* drain(): with the GIL, Python takes the records */
    PyObject *root;                /* the machine a handler without regs.machine runs on */
    PyObject *ctxs;                /* list of (machine, task), indexed by the records */
    PyObject *last_m, *last_task;  /* borrowed from ctxs: the last context used */
    int last_ctx;
} Ring;

static PyTypeObject RingType, TraceType, TraceEntryType, TraceReturnType;

static int Ring_init(Ring *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "drain", "root", NULL};
    Py_ssize_t cap;
    PyObject *drain, *root;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nOO", kwlist, &cap, &drain, &root))
        return -1;
    if (cap < 4096 || cap > ((Py_ssize_t)1 << 30) || !PyCallable_Check(drain)) {
        PyErr_SetString(PyExc_ValueError, "Ring(capacity in [4096, 2**30], drain callable, root)");
        return -1;
    }
    char *buf = PyMem_Realloc(self->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = buf;
    self->cap = cap;
    self->len = 0;
    Py_XSETREF(self->drain, Py_NewRef(drain));
    Py_XSETREF(self->root, Py_NewRef(root));
    Py_XSETREF(self->ctxs, PyList_New(0));
    self->last_m = self->last_task = NULL;
    return self->ctxs != NULL ? 0 : -1;
}

/* take() -> (records, contexts): what was written since the last take; empties the ring. */
static PyObject *Ring_take(Ring *self, PyObject *noargs)
{
    (void)noargs;
    PyObject *data = PyBytes_FromStringAndSize(self->buf, self->len);
    PyObject *fresh = PyList_New(0);
    if (data == NULL || fresh == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(fresh);
        return NULL;
    }
    PyObject *ctxs = self->ctxs;
    self->ctxs = fresh;
    self->len = 0;
    self->last_m = self->last_task = NULL;
    PyObject *r = PyTuple_Pack(2, data, ctxs);
    Py_DECREF(data);
    Py_DECREF(ctxs);
    return r;
}

static int ring_drain(Ring *rg)
{
    PyObject *r = PyObject_CallNoArgs(rg->drain);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The context index of the hit (its machine and task): 0, NEED_GIL, or -1. */
static int ring_ctx(Ring *rg, Core *c, PyObject *m, int gil, int *idx)
{
    if (c != NULL && c->task != NULL && c->m == rg->last_m && c->task == rg->last_task) {
        *idx = rg->last_ctx;
        return 0;
    }
    if (!gil)
        return NEED_GIL;
    PyObject *task;
    if (c != NULL && c->task != NULL) {
        m = c->m;
        task = Py_NewRef(c->task);
    } else if ((task = PyObject_GetAttrString(m, "current_task")) == NULL) {
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(rg->ctxs), i;
    for (i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(rg->ctxs, i);
        if (PyTuple_GET_ITEM(t, 0) == m && PyTuple_GET_ITEM(t, 1) == task)
            break;
    }
    if (i == n) {
        if (n >= 0xFFFF && ring_drain(rg) < 0) {
            Py_DECREF(task);
            return -1;
        }
        i = PyList_GET_SIZE(rg->ctxs);
        PyObject *t = PyTuple_Pack(2, m, task);
        if (t == NULL || PyList_Append(rg->ctxs, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(task);
            return -1;
        }
        Py_DECREF(t);
    }
    PyObject *t = PyList_GET_ITEM(rg->ctxs, i);
    rg->last_m = PyTuple_GET_ITEM(t, 0);
    rg->last_task = PyTuple_GET_ITEM(t, 1);
    rg->last_ctx = (int)i;
    *idx = (int)i;
    Py_DECREF(task);
    return 0;
}

static PyObject *Ring_get_len(Ring *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->len);
}

static PyGetSetDef Ring_getset[] = {
    {"pending", (getter)Ring_get_len, NULL, "bytes of records not yet taken", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Ring_members[] = {
    {"capacity", T_PYSSIZET, offsetof(Ring, cap), READONLY, "bytes"},
    {"records", T_ULONGLONG, offsetof(Ring, records), READONLY, "records written, ever"},
    {"root", T_OBJECT, offsetof(Ring, root), READONLY, "the machine attached to"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Ring_methods[] = {
    {"take", (PyCFunction)Ring_take, METH_NOARGS,
     "take() -> (records: bytes, contexts: [(machine, task)]); empties the ring"},
    {NULL, NULL, 0, NULL},
};

static int Ring_traverse(Ring *self, visitproc visit, void *arg)
{
    Py_VISIT(self->drain);
    Py_VISIT(self->root);
    Py_VISIT(self->ctxs);
    return 0;
}

static int Ring_clear(Ring *self)
{
    Py_CLEAR(self->drain);
    Py_CLEAR(self->root);
    Py_CLEAR(self->ctxs);
    self->last_m = self->last_task = NULL;
    return 0;
}

static void Ring_dealloc(Ring *self)
{
    PyObject_GC_UnTrack(self);
    Ring_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Ring",
    .tp_doc = "Ring(capacity, drain, root): trace records written at hits, taken by Python.",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_traverse = (traverseproc)Ring_traverse,
    .tp_clear = (inquiry)Ring_clear,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_members = Ring_members,
    .tp_getset = Ring_getset,
};

/* --- Trace -------------------------------------------------------------------------------- */
struct Trace {
    PyObject_HEAD
    Ring *ring;
    int id, clock, flags;          /* flags: the programs read eflags */
    int64_t *code, *ecode;         /* the hit's (or return's) program; a return probe's captures */
    int nargs, ncapt;
    Py_ssize_t data_bytes;         /* what the captures take of ri.data */
    Py_ssize_t max_record;         /* the largest record code writes (program_ok) */
    unsigned long long hits, entries;
};


/* What one run of a program sees. */
typedef struct {
    Core *c;                 /* the hitting core, or NULL: reads and the clock go through Python */
    PyObject *m;             /* the machine (with the GIL) */
    int gil;
    uint64_t r[NREGS];
    unsigned long long ts, entry_ts;
    const char *capt;        /* a return's capture slots (NULL: none) */
} Env;

static inline char *rspan_cached(Core *c, uint64_t addr, Py_ssize_t size)
{
    for (int i = 0; i < NSPANS; i++) {
        Span *s = &c->rspans[i];
        if (addr >= s->start && addr + (uint64_t)size <= s->end && addr + (uint64_t)size > addr)
            return s->ptr + (addr - s->start);
    }
    return NULL;
}

/* size bytes at addr into dst: 0, 1 a fault, NEED_GIL, or -1 an error. */
static int env_read(Env *e, uint64_t addr, char *dst, Py_ssize_t size)
{
    char *p;
    if (e->c != NULL && (p = rspan_cached(e->c, addr, size)) != NULL) {
        memcpy(dst, p, (size_t)size);
        return 0;
    }
    if (!e->gil)
        return NEED_GIL;
    if (e->c != NULL && e->c->rspan != NULL && e->c->rspan != Py_None) {
        PyObject *r = PyObject_CallFunction(e->c->rspan, "K", (unsigned long long)addr);
        if (r == NULL)
            return -1;
        if (r != Py_None) {
            unsigned long long start, end, ptr;
            PyObject *keep;
            if (!PyArg_ParseTuple(r, "KKKO", &start, &end, &ptr, &keep)) {
                Py_DECREF(r);
                return -1;
            }
            Span *s = &e->c->rspans[e->c->next_rspan];
            e->c->next_rspan = (e->c->next_rspan + 1) % NSPANS;
            Py_XSETREF(s->keep, Py_NewRef(keep));
            s->start = start;
            s->end = end;
            s->ptr = (char *)(uintptr_t)ptr;
        }
        Py_DECREF(r);
        if ((p = rspan_cached(e->c, addr, size)) != NULL) {
            memcpy(dst, p, (size_t)size);
            return 0;
        }
    }
    PyObject *b = PyObject_CallMethod(e->m, "read", "Kn", (unsigned long long)addr, size);
    if (b == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;                        /* Ctrl-C and the like go on up */
        PyErr_Clear();                        /* _fetch: any exception of read() is a fault */
        return 1;
    }
    int rc = 1;
    if (PyBytes_Check(b) && PyBytes_GET_SIZE(b) == size) {
        memcpy(dst, PyBytes_AS_STRING(b), (size_t)size);
        rc = 0;
    }
    Py_DECREF(b);
    return rc;
}

static int env_ulong(Env *e, uint64_t addr, uint64_t *v)
{
    *v = 0;
    return env_read(e, addr, (char *)v, 8);
}

/* regs_get_kernel_stack_nth: 0 when the word cannot be read. */
static int stack_nth(Env *e, uint64_t n, uint64_t *v)
{
    int rc = env_ulong(e, e->r[R_RSP] + 8 * n, v);
    if (rc == 1)
        *v = 0;
    return rc == 1 ? 0 : rc;
}

/* strncpy_from_kernel_nofault into dst (room for MAX_STR bytes; no NUL is stored):
 * 0 (*len: the bytes before the NUL, at most MAX_STR), 1 a fault, NEED_GIL, or -1. */
static int read_string(Env *e, uint64_t addr, char *dst, Py_ssize_t *len)
{
    Py_ssize_t n = 0;
    while (n < MAX_STR) {
        Py_ssize_t size = 4096 - (Py_ssize_t)(addr % 4096);
        if (size > MAX_STR - n)
            size = MAX_STR - n;
        int rc = env_read(e, addr, dst + n, size);
        if (rc != 0)
            return rc;
        char *nul = memchr(dst + n, 0, (size_t)size);
        if (nul != NULL) {
            n = nul - dst;
            break;
        }
        n += size;
        addr += (uint64_t)size;
    }
    *len = n;
    return 0;
}

typedef struct {
    char *p;                 /* where the next word goes */
} Out;

static inline void put(Out *o, uint64_t v)
{
    memcpy(o->p, &v, 8);
    o->p += 8;
}

static int put_string(Env *e, Out *o, uint64_t addr)
{
    Py_ssize_t len;
    int rc = read_string(e, addr, o->p + 8, &len);
    if (rc == 1) {
        put(o, ELEM_FAULT);
        return 0;
    }
    if (rc != 0)
        return rc;
    put(o, (uint64_t)len);
    Py_ssize_t padded = (len + 7) & ~(Py_ssize_t)7;
    memset(o->p + len, 0, (size_t)(padded - len));
    o->p += padded;
    return 0;
}

/* Stage 1: the load. 0 (ok: *v), 1 (None), NEED_GIL, -1. */
static int do_load(Env *e, int64_t op, int64_t param, uint64_t *v)
{
    switch (op) {
    case L_REG:
        *v = e->r[param];
        return 0;
    case L_IMM:
        *v = (uint64_t)param;
        return 0;
    case L_STACK:
        return stack_nth(e, (uint64_t)param, v);
    case L_STACKP:
        *v = e->r[R_RSP];
        return 0;
    case L_RETVAL:
        *v = e->r[0];
        return 0;
    case L_ARG:
        if (param < 6) {
            *v = e->r[arg_regs[param]];
            return 0;
        }
        return stack_nth(e, (uint64_t)(param - 5), v);
    case L_CAPT: {
        uint64_t slot[2];
        if (e->capt == NULL)
            return 1;
        memcpy(slot, e->capt + param, 16);
        *v = slot[1];
        return slot[0] ? 0 : 1;
    }
    case L_DUR:
        *v = e->ts - e->entry_ts;
        return 0;
    default:
        return 1;
    }
}

static inline uint64_t mask_of(int64_t size)
{
    return size >= 8 ? ~0ULL : (1ULL << (8 * size)) - 1;
}

/* One argument of a hit's program into o; *pc moves past it. */
static int run_arg(Env *e, const int64_t **pc, Out *o)
{
    const int64_t *w = *pc;
    int64_t nderef = w[2];
    const int64_t *derefs = w + 3, *tail = w + 3 + nderef;
    int64_t store = tail[0], size = tail[1], count = tail[2], offset = tail[3];
    *pc = tail + 5;
    uint64_t v = 0, lval;
    int rc = do_load(e, w[0], w[1], &v);
    if (rc == 1) {
        put(o, ARG_FAULT);
        return 0;
    }
    if (rc != 0)
        return rc;
    lval = v;
    for (int64_t i = 0; i < nderef; i++) {
        lval = v;
        rc = env_ulong(e, v + (uint64_t)derefs[i], &v);
        if (rc == 1) {
            put(o, ARG_FAULT);
            return 0;
        }
        if (rc != 0)
            return rc;
    }
    if (store == S_RAW) {
        put(o, 0);
        put(o, v);
        return 0;
    }
    if (store == S_MEM) {
        uint64_t base = v + (uint64_t)offset;
        for (int64_t i = 0; i < (count ? count : 1); i++) {
            uint64_t x = 0;
            rc = env_read(e, base + (uint64_t)(i * size), (char *)&x, (Py_ssize_t)size);
            if (rc < 0)
                return rc;
            put(o, rc == 1);
            put(o, rc == 1 ? 0 : x);
        }
        return 0;
    }
    if (!count)                                /* S_STR */
        return put_string(e, o, v + (uint64_t)offset);
    /* string[N]: N char * from where the last dereference read (_string_array). */
    if ((rc = put_string(e, o, v)) != 0)
        return rc;
    for (int64_t i = 1; i < count; i++) {
        if (!nderef) {
            put(o, ELEM_FAULT);
            continue;
        }
        uint64_t ptr;
        rc = env_ulong(e, lval + 8 * (uint64_t)i + (uint64_t)derefs[nderef - 1], &ptr);
        if (rc == 1) {
            put(o, ELEM_FAULT);
            continue;
        }
        if (rc != 0 || (rc = put_string(e, o, ptr)) != 0)
            return rc;
    }
    return 0;
}

/* One capture of an entry's program into its slot; *pc moves past it. */
static int run_capture(Env *e, const int64_t **pc, char *slot)
{
    const int64_t *w = *pc;
    int64_t nderef = w[2];
    const int64_t *derefs = w + 3, *tail = w + 3 + nderef;
    int64_t store = tail[0], size = tail[1], offset = tail[3], sext = tail[4];
    *pc = tail + 5;
    uint64_t head[2] = {0, 0}, v = 0;
    int rc = do_load(e, w[0], w[1], &v);
    for (int64_t i = 0; rc == 0 && i < nderef; i++)
        rc = env_ulong(e, v + (uint64_t)derefs[i], &v);
    if (rc == 0 && store == S_MEM) {
        uint64_t x = 0;
        rc = env_read(e, v + (uint64_t)offset, (char *)&x, (Py_ssize_t)size);
        v = x;
    }
    if (rc < 0 || rc == NEED_GIL)
        return rc;
    if (rc == 0) {
        v &= mask_of(size);
        if (sext && size < 8 && (v >> (8 * size - 1)) & 1)
            v |= ~mask_of(size);
        head[0] = 1;
        head[1] = v;
    }
    memcpy(slot, head, 16);
    return 0;
}

static int trace_now(Trace *t, Env *e, unsigned long long *ts)
{
    if (t->clock == CLOCK_HOST) {
        *ts = mono_ns();
        return 0;
    }
    if (e->c != NULL) {
        *ts = core_vnow(e->c);
        return 0;
    }
    PyObject *r = PyObject_CallMethod(e->m, "now", NULL);
    if (r == NULL)
        return -1;
    *ts = PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? -1 : 0;
}

/* A record of t's program: 0 written, NEED_GIL (nothing written), -1 an error. */
static int trace_record(Trace *t, Env *e, uint64_t ip, uint64_t caller)
{
    Ring *rg = t->ring;
    if (rg->cap - rg->len < t->max_record) {
        if (!e->gil)
            return NEED_GIL;
        if (ring_drain(rg) < 0)
            return -1;
        if (rg->cap - rg->len < t->max_record) {
            PyErr_SetString(PyExc_RuntimeError, "trace ring: a record larger than the ring");
            return -1;
        }
    }
    int ctx;
    int rc = ring_ctx(rg, e->c, e->m, e->gil, &ctx);
    if (rc != 0)
        return rc;
    Out o = {rg->buf + rg->len + REC_HEAD};
    const int64_t *pc = t->code;
    for (int i = 0; i < t->nargs; i++)
        if ((rc = run_arg(e, &pc, &o)) != 0)
            return rc;
    char *rec = rg->buf + rg->len;
    uint32_t size = (uint32_t)(o.p - rec);
    uint16_t id = (uint16_t)t->id, cx = (uint16_t)ctx;
    uint64_t head[4] = {e->ts, ip, caller, e->entry_ts};
    memcpy(rec, &size, 4);
    memcpy(rec + 4, &id, 2);
    memcpy(rec + 6, &cx, 2);
    memcpy(rec + 8, head, sizeof head);
    rg->len += size;
    rg->records++;
    return 0;
}

static void env_core(Env *e, Core *c, int gil)
{
    e->c = c;
    e->m = c->m;
    e->gil = gil;
    memcpy(e->r, c->regs->gpr, 16 * sizeof(uint64_t));
    e->capt = NULL;
    e->entry_ts = 0;
}

static void env_flags(Env *e, Trace *t)
{
    if (t->flags) {
        uint64_t v = 0;
        e->c->regs->reg_read(e->c->regs->uch, e->c->regs->eflags_id, &v);
        e->r[R_EFLAGS] = v;
    }
}

/* A kprobe site's Trace pre_handlers without the GIL (hit_pure): 0 every record
 * written, NEED_GIL none written. */
#define MAX_PURE_TRACES 8
static int hit_traces(Hit *h)
{
    Core *c = h->core;
    Ring *rings[MAX_PURE_TRACES];
    Py_ssize_t lens[MAX_PURE_TRACES];
    unsigned long long recs[MAX_PURE_TRACES];
    int nt = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(h->counts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(h->counts, i);
        if (Py_TYPE(a) != &TraceType)
            continue;
        Trace *t = (Trace *)a;
        if (nt == MAX_PURE_TRACES)
            goto undo;
        rings[nt] = t->ring;
        lens[nt] = t->ring->len;
        recs[nt++] = t->ring->records;
        Env e;
        env_core(&e, c, 0);
        e.r[R_RIP] = h->addr;
        env_flags(&e, t);
        if (trace_now(t, &e, &e.ts) != 0 || trace_record(t, &e, h->addr, 0) != 0)
            goto undo;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(h->counts, i);
        if (Py_TYPE(a) == &TraceType)
            ((Trace *)a)->hits++;
    }
    return 0;
undo:
    while (nt-- > 0) {                       /* latest first: a ring seen twice ends as it was */
        rings[nt]->len = lens[nt];
        rings[nt]->records = recs[nt];
    }
    return NEED_GIL;
}

/* A return probe's entry: the time, the function and the captures into dst
 * (data_bytes of ri.data). */
static int trace_capture(Trace *t, Env *e, uint64_t func, char *dst)
{
    unsigned long long ts;
    int rc = trace_now(t, e, &ts);
    if (rc != 0)
        return rc;
    uint64_t head[2] = {ts, func};
    memcpy(dst, head, 16);
    const int64_t *pc = t->ecode;
    for (int i = 0; i < t->ncapt; i++)
        if ((rc = run_capture(e, &pc, dst + 16 + 16 * i)) != 0)
            return rc;
    return 0;
}

static inline char *data_of(Trace *t, Instance *ri)
{
    return ri->data_ptr != NULL && ri->data_len >= t->data_bytes ? ri->data_ptr : NULL;
}

/* hit_pure's entry of a kretprobe whose entry_handler is a Trace's, into the
 * data of ri, the instance it is about to take. */
static int trace_enter_pure(Hit *h, Trace *t, Instance *ri)
{
    char *dst = data_of(t, ri);
    if (dst == NULL)
        return 0;
    Env e;
    env_core(&e, h->core, 0);
    e.r[R_RIP] = h->addr;
    env_flags(&e, t);
    return trace_capture(t, &e, h->addr, dst);
}

static void trace_entered(Trace *t)
{
    t->entries++;
}

/* A return: the record of ri's call (regs.rip: the real return address). */
static int trace_leave(Trace *t, Env *e, Instance *ri)
{
    const char *data = data_of(t, ri);
    int rc = trace_now(t, e, &e->ts);
    if (rc != 0)
        return rc;
    uint64_t head[2] = {e->ts, 0};              /* _Builder: entries.get(ri, (ts, 0, {})) */
    if (data != NULL)
        memcpy(head, data, 16);
    e->entry_ts = head[0];
    e->capt = data != NULL ? data + 16 : NULL;
    return trace_record(t, e, head[1], e->r[R_RIP]);
}

/* tramp_pure's return of an instance whose handler is a Trace's. */
static int trace_leave_pure(Core *c, Trace *t, Instance *ri)
{
    Env e;
    env_core(&e, c, 0);
    e.r[R_RIP] = ri->ret_addr;
    env_flags(&e, t);
    int rc = trace_leave(t, &e, ri);
    if (rc == 0)
        t->hits++;
    return rc;
}

/* A Trace's handler fn (the Trace or one of its views) with the GIL from a hit
 * path of core c, whose regs (args[1]) are the ones the handler gets; with
 * registers a handler before it changed, as called from Python. */
static PyObject *trace_call(Core *c, PyObject *fn, Trace *t, PyObject *const *args)
{
    PyTypeObject *tp = Py_TYPE(fn);
    if (DIRTY(c->regs) || args[1] != (PyObject *)c->regs
        || (tp != &TraceType && !PyObject_TypeCheck(args[0], &InstanceType)))
        return PyObject_Vectorcall(fn, args, 2, NULL);
    Env e;
    env_core(&e, c, 1);
    e.r[R_RIP] = c->regs->rip;
    env_flags(&e, t);
    int rc;
    if (tp == &TraceType) {
        if ((rc = trace_now(t, &e, &e.ts)) == 0 && (rc = trace_record(t, &e, e.r[R_RIP], 0)) == 0)
            t->hits++;
    } else if (tp == &TraceEntryType) {
        char *dst = data_of(t, (Instance *)args[0]);
        if ((rc = dst != NULL ? trace_capture(t, &e, e.r[R_RIP], dst) : 0) == 0)
            t->entries++;
    } else if ((rc = trace_leave(t, &e, (Instance *)args[0])) == 0) {
        t->hits++;
    }
    return rc != 0 ? NULL : PyLong_FromLong(0);
}

/* --- the handlers, called from Python (or C with the GIL): regs any pt_regs ----------- */
static int env_python(Env *e, Trace *t, PyObject *regs)
{
    e->c = NULL;
    e->gil = 1;
    e->capt = NULL;
    e->ts = e->entry_ts = 0;
    PyObject *m = PyObject_GetAttrString(regs, "machine");
    if (m == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
    }
    if (m == NULL || m == Py_None) {
        Py_XDECREF(m);
        m = Py_NewRef(t->ring->root);
    }
    e->m = m;                                   /* a new reference: env_done */
    for (int i = 0; i < NREGS; i++) {
        if (i == R_EFLAGS && !t->flags) {
            e->r[i] = 0;
            continue;
        }
        PyObject *v = PyObject_GetAttrString(regs, reg_names[i]);
        if (v == NULL)
            return -1;
        e->r[i] = PyLong_AsUnsignedLongLongMask(v);
        Py_DECREF(v);
        if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *Trace_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    Trace *t = (Trace *)self;
    PyObject *kp, *regs;
    if (kwds != NULL || !PyArg_ParseTuple(args, "OO", &kp, &regs))
        return NULL;
    Env e;
    e.m = NULL;
    int rc = env_python(&e, t, regs);
    if (rc == 0 && (rc = trace_now(t, &e, &e.ts)) == 0)
        rc = trace_record(t, &e, e.r[R_RIP], 0);
    Py_XDECREF(e.m);
    if (rc != 0)
        return NULL;
    t->hits++;
    return PyLong_FromLong(0);
}

static PyObject *trace_view_call(PyObject *self, PyObject *args, PyObject *kwds, int entry)
{
    Trace *t = (Trace *)((View *)self)->act;
    PyObject *ri, *regs;
    if (kwds != NULL || !PyArg_ParseTuple(args, "OO", &ri, &regs))
        return NULL;
    if (!PyObject_TypeCheck(ri, &InstanceType)) {
        PyErr_SetString(PyExc_TypeError, "a Trace handler takes (ri, regs)");
        return NULL;
    }
    Env e;
    e.m = NULL;
    int rc = env_python(&e, t, regs);
    if (rc == 0 && entry) {
        char *dst = data_of(t, (Instance *)ri);
        if (dst != NULL)
            rc = trace_capture(t, &e, e.r[R_RIP], dst);
        if (rc == 0)
            t->entries++;
    } else if (rc == 0 && (rc = trace_leave(t, &e, (Instance *)ri)) == 0) {
        t->hits++;
    }
    Py_XDECREF(e.m);
    return rc != 0 ? NULL : PyLong_FromLong(0);
}

static PyObject *TraceEntry_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    return trace_view_call(self, args, kwds, 1);
}

static PyObject *TraceReturn_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    return trace_view_call(self, args, kwds, 0);
}

static PyTypeObject TraceEntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.TraceEntry",
    .tp_doc = "A Trace's entry_handler(ri, regs): the time, the function and the captures "
              "into ri.data.",
    .tp_basicsize = sizeof(View),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_call = TraceEntry_call,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_dealloc = (destructor)View_dealloc,
};

static PyTypeObject TraceReturnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.TraceReturn",
    .tp_doc = "A Trace's handler(ri, regs): the return's record.",
    .tp_basicsize = sizeof(View),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_call = TraceReturn_call,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_dealloc = (destructor)View_dealloc,
};

static int64_t *words_of(PyObject *code, Py_ssize_t *n)
{
    Py_buffer view;
    if (PyObject_GetBuffer(code, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len % 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "Trace: a program is whole int64 words");
        return NULL;
    }
    int64_t *w = PyMem_Malloc(view.len ? (size_t)view.len : 8);
    if (w == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(w, view.buf, (size_t)view.len);
    *n = view.len / 8;
    PyBuffer_Release(&view);
    return w;
}

/* Check a program as run_arg/run_capture will walk it: nargs arguments in n words.
 * *bytes: what a capture program fills of ri.data, or the most a hit's program
 * writes after the record's head; *flags: whether it reads eflags. */
static int program_ok(const int64_t *w, Py_ssize_t n, int nargs, Py_ssize_t capt_bytes,
                      int capture, Py_ssize_t *bytes, int *flags)
{
    Py_ssize_t i = 0;
    for (int a = 0; a < nargs; a++) {
        if (n - i < 3 || w[i] < L_FAULT || w[i] > L_DUR || w[i + 2] < 0 || w[i + 2] > 64
            || n - i < 3 + w[i + 2] + 5)
            return 0;
        int64_t op = w[i], param = w[i + 1];
        if ((op == L_REG && (param < 0 || param >= NREGS)) || ((op == L_STACK || op == L_ARG) && param < 0)
            || (op == L_CAPT && (capture || param < 0 || param % 16 || param + 16 > capt_bytes)))
            return 0;
        const int64_t *tail = w + i + 3 + w[i + 2];
        int64_t store = tail[0], size = tail[1], count = tail[2];
        if (store < S_RAW || store > (capture ? S_MEM : S_STR) || size < 1 || size > 8
            || count < 0 || count > 64 || (capture && count))
            return 0;
        Py_ssize_t items = count ? count : 1;       /* run_arg: ARG_FAULT, or the elements */
        Py_ssize_t item = store == S_STR ? 8 + MAX_STR + 1 : 16;
        *bytes += capture ? 16 : (item * items > 8 ? item * items : 8);
        *flags |= op == L_REG && param == R_EFLAGS;
        i += 3 + w[i + 2] + 5;
    }
    return i == n;
}

static int Trace_init(Trace *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ring", "id", "virtual", "code", "nargs", "ecode", "ncapt", NULL};
    PyObject *ring, *code, *ecode;
    int id, virt, nargs, ncapt, flags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!ipOiOi", kwlist, &RingType, &ring, &id, &virt,
                                     &code, &nargs, &ecode, &ncapt))
        return -1;
    if (id < 0 || id > 0xFFFF || nargs < 0 || ncapt < 0 || ncapt > TRACE_MAXCAPT) {
        PyErr_SetString(PyExc_ValueError, "Trace: id, nargs or ncapt out of range");
        return -1;
    }
    Py_ssize_t nc, ne;
    int64_t *c = words_of(code, &nc);
    int64_t *e = c != NULL ? words_of(ecode, &ne) : NULL;
    Py_ssize_t capt_bytes = 0, record = REC_HEAD;
    if (e == NULL || !program_ok(e, ne, ncapt, 0, 1, &capt_bytes, &flags)
        || !program_ok(c, nc, nargs, capt_bytes, 0, &record, &flags)
        || record > ((Ring *)ring)->cap / 2) {
        if (c != NULL && e != NULL)
            PyErr_SetString(PyExc_ValueError, "Trace: a malformed program, or records over half the ring");
        PyMem_Free(c);
        PyMem_Free(e);
        return -1;
    }
    PyMem_Free(self->code);
    PyMem_Free(self->ecode);
    self->code = c;
    self->ecode = e;
    Py_XSETREF(self->ring, (Ring *)Py_NewRef(ring));
    self->id = id;
    self->clock = virt ? CLOCK_VIRTUAL : CLOCK_HOST;
    self->nargs = nargs;
    self->ncapt = ncapt;
    self->data_bytes = 16 + capt_bytes;
    self->max_record = record;
    self->flags = flags;
    self->hits = self->entries = 0;
    return 0;
}

static PyObject *Trace_entry(Trace *self, void *closure)
{
    (void)closure;
    return view_of((PyObject *)self, &TraceEntryType);
}

static PyObject *Trace_handler(Trace *self, void *closure)
{
    (void)closure;
    return view_of((PyObject *)self, &TraceReturnType);
}

static PyGetSetDef Trace_getset[] = {
    {"entry_handler", (getter)Trace_entry, NULL, "a return probe's entry_handler", NULL},
    {"handler", (getter)Trace_handler, NULL, "a return probe's handler", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Trace_members[] = {
    {"hits", T_ULONGLONG, offsetof(Trace, hits), READONLY, "records written"},
    {"entries", T_ULONGLONG, offsetof(Trace, entries), READONLY, "a return probe's entries taken"},
    {"id", T_INT, offsetof(Trace, id), READONLY, "the records' trace id"},
    {"max_record", T_PYSSIZET, offsetof(Trace, max_record), READONLY,
     "the largest record a hit writes (bytes)"},
    {"data_size", T_PYSSIZET, offsetof(Trace, data_bytes), READONLY,
     "the ri.data a return probe's entry fills (register the Kretprobe with at least this)"},
    {"ring", T_OBJECT, offsetof(Trace, ring), READONLY, "where the records go"},
    {NULL, 0, 0, 0, NULL},
};

static int Trace_traverse(Trace *self, visitproc visit, void *arg)
{
    Py_VISIT((PyObject *)self->ring);
    return 0;
}

static int Trace_clear(Trace *self)
{
    Py_CLEAR(self->ring);
    return 0;
}

static void Trace_dealloc(Trace *self)
{
    PyObject_GC_UnTrack(self);
    Trace_clear(self);
    PyMem_Free(self->code);
    PyMem_Free(self->ecode);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject TraceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Trace",
    .tp_doc = "Trace(ring, id, virtual, code, nargs, ecode, ncapt): a probe "
              "event's fetch programs run at the hit, records into ring (probes/events/_native.py). "
              "A kprobe pre_handler; a kretprobe's entry_handler/handler pair.",
    .tp_basicsize = sizeof(Trace),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Trace_init,
    .tp_call = Trace_call,
    .tp_traverse = (traverseproc)Trace_traverse,
    .tp_clear = (inquiry)Trace_clear,
    .tp_dealloc = (destructor)Trace_dealloc,
    .tp_getset = Trace_getset,
    .tp_members = Trace_members,
};
