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
 *   noop_intr   a UC_HOOK_INTR callback that does nothing (the int3 floor).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

static PyObject *addresses(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return Py_BuildValue("{s:K,s:K,s:K}",
                         "noop_code", (unsigned long long)(uintptr_t)noop_code,
                         "count_code", (unsigned long long)(uintptr_t)count_code,
                         "noop_intr", (unsigned long long)(uintptr_t)noop_intr);
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
    return PyModule_Create(&module);
}
