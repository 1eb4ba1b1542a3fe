/* Branches of every kind for the Disassembly tests: conditional and unconditional jumps, direct and
   indirect calls, a jump table, a loop, a tail call, and a 10-byte movabs (a listing continuation
   line). No headers, so it also builds with -m32. */
extern int external_work(int);
extern int (*hook)(int);
int counter;

__attribute__((noinline)) int classify(int x) {
    if (x > 5)
        return external_work(x);
    return -x;
}

int dispatch(int op, int a, int b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / (b ? b : 1);
    case 4: return a << (b & 31);
    case 5: return a ^ b;
    case 6: return hook(a);
    case 7: return classify(a) + 7;
    default: return 0;
    }
}

int sum(const int *v, int n) {
    int s = 0;
    for (int i = 0; i < n; i++)
        s += v[i] > 0 ? v[i] : -v[i];
    return s;
}

int tail(int x) { return external_work(x + 1); }

long long big(long long a) { return a * 0x123456789LL + 0x1122334455667788LL; }

int through_pointer(int (*f)(int), int x) { return f(x) + counter; }
