/* emu._native: the native core of kprobe-emu (issue 12), first part.
 *
 * Built by pip with the system compiler (setup.py, an optional extension: the
 * pure-Python path is the reference and is used when this is missing or when
 * KPE_NATIVE=0). It needs no Unicorn headers: the hooks below have the C
 * signatures Unicorn calls (unicorn.h: uc_cb_hookcode_t, uc_cb_hookintr_t) and
 * are installed with uc_hook_add through ctypes (emu._uclib.RawHooks.add_native),
 * which takes their addresses from addresses().
 *
 * What is here now:
 *   noop_code   a UC_HOOK_CODE callback that does nothing: the "C hook" floor of
 *               make bench (what Unicorn alone costs per hooked instruction);
 *   count_code  a UC_HOOK_CODE callback that adds one to the uint64 its user
 *               data points to: a hit counter that never enters Python;
 *   noop_intr   a UC_HOOK_INTR callback that does nothing (the int3 floor);
 *   intr_dispatch  the machine's UC_HOOK_INTR callback (emu._machine): an int3 at
 *               an address of the machine's trap table (a Python dict, read as is,
 *               so Python's changes count at once) calls that callable with the
 *               address, with no ctypes conversion on the way; any other
 *               interrupt goes to the Python fallback. The user data is a
 *               Dispatch object (below), kept alive by the machine;
 *   code_dispatch  a UC_HOOK_CODE callback that calls a Python callable as
 *               fn(None, address, size, None) (a raw hook's arguments) without
 *               ctypes; its user data is a CodeHook object.
 * Both hand what a callable raises to on_error (Machine.abort), as ctypes would
 * drop it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"
#include "_native_common.h"
#include <stdint.h>

typedef struct uc_struct uc_engine;

static void noop_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc; (void)address; (void)size; (void)user;
}

static void count_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc; (void)address; (void)size;
    ++*(volatile uint64_t *)user;
}

static void noop_intr(uc_engine *uc, uint32_t intno, void *user)
{
    (void)uc; (void)intno; (void)user;
}

/* --- the interrupt dispatcher ------------------------------------------------ */
typedef int (*uc_reg_read_t)(uc_engine *uc, int regid, void *value);

/* A native trap: fn(user, uc, address) takes the int3 without the GIL and
 * returns 1, or returns 0 and the dispatcher calls user(address) with it (the
 * trap's Python callable, also in the trap table). */
typedef int (*native_trap_t)(void *user, uc_engine *uc, uint64_t address);

typedef struct {
    uint64_t addr;
    native_trap_t fn;       /* NULL: empty slot */
    PyObject *user;         /* strong */
    char dead;              /* a deleted entry (the probe chain goes on past it) */
} NativeTrap;

typedef struct {
    PyObject_HEAD
    PyObject *traps;        /* dict: address -> callable(address) */
    PyObject *fallback;     /* callable(intno): every other interrupt */
    PyObject *on_error;     /* callable(exception): what a callback raised (Machine.abort) */
    uc_reg_read_t reg_read; /* Unicorn's uc_reg_read, from the loaded library */
    int rip_id;             /* UC_X86_REG_RIP */
    uint64_t *rip;          /* the live RIP (emu._cpu), or NULL: read it through the API */
    NativeTrap *natives;    /* open addressing, a power of two of slots */
    size_t nslots, nused;   /* nused counts live and dead entries */
} Dispatch;

static size_t trap_hash(uint64_t addr, size_t nslots)
{
    addr ^= addr >> 29;
    addr *= 0xbf58476d1ce4e5b9ULL;
    addr ^= addr >> 32;
    return (size_t)addr & (nslots - 1);
}

/* The live entry for addr, or NULL. No GIL needed: only the owning thread,
 * holding the GIL, changes the table, and only while no hook of its runs. */
static NativeTrap *trap_find(Dispatch *d, uint64_t addr)
{
    if (d->nslots == 0)
        return NULL;
    for (size_t i = trap_hash(addr, d->nslots);; i = (i + 1) & (d->nslots - 1)) {
        NativeTrap *t = &d->natives[i];
        if (t->fn == NULL && !t->dead)
            return NULL;
        if (!t->dead && t->addr == addr)
            return t;
    }
}

static int trap_grow(Dispatch *d)
{
    size_t n = d->nslots ? d->nslots * 2 : 64;
    NativeTrap *fresh = calloc(n, sizeof *fresh);
    if (fresh == NULL)
        return -1;
    size_t used = 0;
    for (size_t i = 0; i < d->nslots; i++) {
        NativeTrap *t = &d->natives[i];
        if (t->fn == NULL || t->dead)
            continue;
        size_t j = trap_hash(t->addr, n);
        while (fresh[j].fn != NULL)
            j = (j + 1) & (n - 1);
        fresh[j] = *t;
        used++;
    }
    free(d->natives);
    d->natives = fresh;
    d->nslots = n;
    d->nused = used;
    return 0;
}

static void trap_drop(Dispatch *d, uint64_t addr)
{
    NativeTrap *t = trap_find(d, addr);
    if (t == NULL)
        return;
    t->dead = 1;
    t->fn = NULL;
    Py_CLEAR(t->user);
}

static void traps_clear(Dispatch *d)
{
    for (size_t i = 0; i < d->nslots; i++)
        Py_CLEAR(d->natives[i].user);
    free(d->natives);
    d->natives = NULL;
    d->nslots = d->nused = 0;
}

static void report_error(Dispatch *d)
{
    PyObject *exc = take_exception();
    if (exc == NULL)
        return;
    PyObject *r = PyObject_CallOneArg(d->on_error, exc);
    if (r == NULL)
        PyErr_WriteUnraisable(d->on_error);    /* abort itself failed: say so, go on */
    Py_XDECREF(r);
    Py_DECREF(exc);
}

static void intr_dispatch(uc_engine *uc, uint32_t intno, void *user)
{
    Dispatch *d = (Dispatch *)user;
    uint64_t rip = 0;
    NativeTrap *native = NULL;
    if (intno == 3) {
        if (d->rip != NULL)
            rip = *d->rip;
        else
            d->reg_read(uc, d->rip_id, &rip);
        native = trap_find(d, rip - 1);
        if (native != NULL && native->fn(native->user, uc, rip - 1))
            return;                       /* taken in C, no GIL */
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    if (intno == 3) {
        PyObject *key = PyLong_FromUnsignedLongLong(rip - 1);
        PyObject *fn = NULL;
        if (native != NULL && key != NULL)
            fn = native->user;            /* the same callable the trap table has */
        else if (key != NULL)
            fn = PyDict_GetItemWithError(d->traps, key);
        if (fn != NULL) {
            Py_INCREF(fn);
            PyObject *r = PyObject_CallOneArg(fn, key);
            Py_DECREF(fn);
            Py_DECREF(key);
            if (r == NULL)
                report_error(d);
            Py_XDECREF(r);
            PyGILState_Release(gil);
            return;
        }
        Py_XDECREF(key);
        if (PyErr_Occurred()) {
            report_error(d);
            PyGILState_Release(gil);
            return;
        }
    }
    PyObject *r = PyObject_CallFunction(d->fallback, "I", intno);
    if (r == NULL)
        report_error(d);
    Py_XDECREF(r);
    PyGILState_Release(gil);
}

static int Dispatch_init(Dispatch *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"traps", "fallback", "on_error", "reg_read", "rip_id", "rip", NULL};
    PyObject *traps, *fallback, *on_error;
    unsigned long long reg_read, rip = 0;
    int rip_id;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOKi|K", kwlist, &PyDict_Type, &traps, &fallback,
                                     &on_error, &reg_read, &rip_id, &rip))
        return -1;
    self->rip = (uint64_t *)(uintptr_t)rip;
    if (!PyCallable_Check(fallback) || !PyCallable_Check(on_error) || reg_read == 0) {
        PyErr_SetString(PyExc_TypeError, "Dispatch: fallback and on_error must be callables, "
                                         "reg_read a function address");
        return -1;
    }
    Py_INCREF(traps);
    Py_INCREF(fallback);
    Py_INCREF(on_error);
    Py_XSETREF(self->traps, traps);
    Py_XSETREF(self->fallback, fallback);
    Py_XSETREF(self->on_error, on_error);
    self->reg_read = (uc_reg_read_t)(uintptr_t)reg_read;
    self->rip_id = rip_id;
    return 0;
}

static int Dispatch_traverse(Dispatch *self, visitproc visit, void *arg)
{
    for (size_t i = 0; i < self->nslots; i++)
        Py_VISIT(self->natives[i].user);
    Py_VISIT(self->traps);
    Py_VISIT(self->fallback);
    Py_VISIT(self->on_error);
    return 0;
}

static int Dispatch_clear(Dispatch *self)
{
    traps_clear(self);
    Py_CLEAR(self->traps);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->on_error);
    return 0;
}

static void Dispatch_dealloc(Dispatch *self)
{
    PyObject_GC_UnTrack(self);
    Dispatch_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Dispatch_address(Dispatch *self, PyObject *noargs)
{
    (void)noargs;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)self);
}

static PyObject *Dispatch_set_native(Dispatch *self, PyObject *args)
{
    unsigned long long addr, fn;
    PyObject *user;
    if (!PyArg_ParseTuple(args, "KKO", &addr, &fn, &user))
        return NULL;
    if (fn == 0 || !PyCallable_Check(user)) {
        PyErr_SetString(PyExc_ValueError, "set_native(addr, function address, callable)");
        return NULL;
    }
    trap_drop(self, addr);
    if ((self->nused + 1) * 2 > self->nslots && trap_grow(self) < 0)
        return PyErr_NoMemory();
    size_t i = trap_hash(addr, self->nslots);
    while (self->natives[i].fn != NULL)
        i = (i + 1) & (self->nslots - 1);
    if (!self->natives[i].dead)
        self->nused++;
    self->natives[i] = (NativeTrap){addr, (native_trap_t)(uintptr_t)fn, Py_NewRef(user), 0};
    Py_RETURN_NONE;
}

static PyObject *Dispatch_clear_native(Dispatch *self, PyObject *arg)
{
    unsigned long long addr = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    trap_drop(self, addr);
    Py_RETURN_NONE;
}

static PyObject *Dispatch_clear_natives(Dispatch *self, PyObject *noargs)
{
    (void)noargs;
    traps_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef Dispatch_methods[] = {
    {"set_native", (PyCFunction)Dispatch_set_native, METH_VARARGS,
     "set_native(addr, fn, user): an int3 at addr calls the C function fn(user, uc, addr) "
     "first, without the GIL; when it returns 0, user(addr) with the GIL"},
    {"clear_native", (PyCFunction)Dispatch_clear_native, METH_O,
     "clear_native(addr): forget the native trap at addr"},
    {"clear_natives", (PyCFunction)Dispatch_clear_natives, METH_NOARGS,
     "clear_natives(): forget every native trap"},
    {"address", (PyCFunction)Dispatch_address, METH_NOARGS,
     "address() -> the object's address: the hook's user data (keep the object alive)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DispatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emu._native.Dispatch",
    .tp_doc = "Dispatch(traps, fallback, on_error, reg_read, rip_id): the user data of "
              "intr_dispatch.",
    .tp_basicsize = sizeof(Dispatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Dispatch_init,
    .tp_traverse = (traverseproc)Dispatch_traverse,
    .tp_clear = (inquiry)Dispatch_clear,
    .tp_dealloc = (destructor)Dispatch_dealloc,
    .tp_methods = Dispatch_methods,
};

/* --- raw code hooks ------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *fn;           /* callable(None, address, size, None) */
    PyObject *on_error;     /* callable(exception) */
} CodeHook;

static void code_dispatch(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc;
    CodeHook *h = (CodeHook *)user;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *addr = PyLong_FromUnsignedLongLong(address);
    PyObject *sz = PyLong_FromUnsignedLong(size);
    PyObject *r = NULL;
    if (addr != NULL && sz != NULL) {
        PyObject *args[4] = {Py_None, addr, sz, Py_None};
        r = PyObject_Vectorcall(h->fn, args, 4, NULL);
    }
    Py_XDECREF(addr);
    Py_XDECREF(sz);
    if (r == NULL) {
        PyObject *exc = take_exception();
        if (exc != NULL) {
            PyObject *e = PyObject_CallOneArg(h->on_error, exc);
            if (e == NULL)
                PyErr_WriteUnraisable(h->on_error);
            Py_XDECREF(e);
            Py_DECREF(exc);
        }
    }
    Py_XDECREF(r);
    PyGILState_Release(gil);
}

static int CodeHook_init(CodeHook *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fn", "on_error", NULL};
    PyObject *fn, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &fn, &on_error))
        return -1;
    if (!PyCallable_Check(fn) || !PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "CodeHook: fn and on_error must be callables");
        return -1;
    }
    Py_INCREF(fn);
    Py_INCREF(on_error);
    Py_XSETREF(self->fn, fn);
    Py_XSETREF(self->on_error, on_error);
    return 0;
}

static int CodeHook_traverse(CodeHook *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fn);
    Py_VISIT(self->on_error);
    return 0;
}

static int CodeHook_clear(CodeHook *self)
{
    Py_CLEAR(self->fn);
    Py_CLEAR(self->on_error);
    return 0;
}

static void CodeHook_dealloc(CodeHook *self)
{
    PyObject_GC_UnTrack(self);
    CodeHook_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *CodeHook_address(CodeHook *self, PyObject *noargs)
{
    (void)noargs;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)self);
}

static PyMethodDef CodeHook_methods[] = {
    {"address", (PyCFunction)CodeHook_address, METH_NOARGS,
     "address() -> the object's address: the hook's user data (keep the object alive)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CodeHookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emu._native.CodeHook",
    .tp_doc = "CodeHook(fn, on_error): the user data of code_dispatch.",
    .tp_basicsize = sizeof(CodeHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)CodeHook_init,
    .tp_traverse = (traverseproc)CodeHook_traverse,
    .tp_clear = (inquiry)CodeHook_clear,
    .tp_dealloc = (destructor)CodeHook_dealloc,
    .tp_methods = CodeHook_methods,
};

/* --- a counter C reads and writes without the GIL ---------------------------------- */
typedef struct {
    PyObject_HEAD
    long long value;
} Cell;

static int Cell_init(Cell *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", NULL};
    long long value = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L", kwlist, &value))
        return -1;
    self->value = value;
    return 0;
}

static PyObject *Cell_address(Cell *self, PyObject *noargs)
{
    (void)noargs;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)&self->value);
}

static PyMemberDef Cell_members[] = {
    {"value", T_LONGLONG, offsetof(Cell, value), 0, "the value"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Cell_methods[] = {
    {"address", (PyCFunction)Cell_address, METH_NOARGS,
     "address() -> the address of value (an int64_t; keep the cell alive)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CellType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emu._native.Cell",
    .tp_doc = "Cell(value=0): an int64 that Python and native code share (the machine's "
              "preemption countdown).",
    .tp_basicsize = sizeof(Cell),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cell_init,
    .tp_members = Cell_members,
    .tp_methods = Cell_methods,
};

static PyObject *addresses(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}",
                         "noop_code", (unsigned long long)(uintptr_t)noop_code,
                         "count_code", (unsigned long long)(uintptr_t)count_code,
                         "noop_intr", (unsigned long long)(uintptr_t)noop_intr,
                         "intr_dispatch", (unsigned long long)(uintptr_t)intr_dispatch,
                         "code_dispatch", (unsigned long long)(uintptr_t)code_dispatch);
}

static PyMethodDef methods[] = {
    {"addresses", addresses, METH_NOARGS,
     "addresses() -> {name: address} of the native hook callbacks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "emu._native",
    "The native core of kprobe-emu (hook callbacks in C; see emu/_native.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&DispatchType) < 0 || PyType_Ready(&CodeHookType) < 0
        || PyType_Ready(&CellType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&DispatchType);
    if (PyModule_AddObject(m, "Dispatch", (PyObject *)&DispatchType) < 0) {
        Py_DECREF(&DispatchType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CodeHookType);
    if (PyModule_AddObject(m, "CodeHook", (PyObject *)&CodeHookType) < 0) {
        Py_DECREF(&CodeHookType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CellType);
    if (PyModule_AddObject(m, "Cell", (PyObject *)&CellType) < 0) {
        Py_DECREF(&CellType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
