import Glibc

/// A dedicated thread that makes every ptrace call of one `ProcessTarget`.
///
/// Linux ties a tracee to the *thread* that attached it: PTRACE_DETACH, PTRACE_GETREGSET and
/// waitpid from any other thread fail with ESRCH. Callers (a test, the engine, the watchdog, the
/// signal guard's cleanup thread) run on arbitrary threads, so the attachments live on this one.
/// If this thread ever exits while attached, the kernel detaches and restarts the tracees itself.
final class TracerThread: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var jobs: [() -> Void] = []
    private var submitted: UInt64 = 0
    private var completed: UInt64 = 0
    private var shuttingDown = false
    private var thread: pthread_t = 0

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { argument in
            let tracer = Unmanaged<TracerThread>.fromOpaque(argument!).takeRetainedValue()
            tracer.loop()
            return nil
        }, box)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    private func loop() {
        pthread_mutex_lock(&mutex)
        while true {
            while jobs.isEmpty && !shuttingDown { pthread_cond_wait(&condition, &mutex) }
            if jobs.isEmpty && shuttingDown { break }
            let job = jobs.removeFirst()
            pthread_mutex_unlock(&mutex)
            job()
            pthread_mutex_lock(&mutex)
            completed += 1
            pthread_cond_broadcast(&condition)
        }
        pthread_mutex_unlock(&mutex)
    }

    private var isCurrent: Bool { pthread_equal(pthread_self(), thread) != 0 }

    /// Runs `body` on the tracer thread and waits for it.
    func perform<T>(_ body: () throws(TargetError) -> T) throws(TargetError) -> T {
        if isCurrent { return try body() }
        var result: Result<T, TargetError>?
        withoutActuallyEscaping(body) { body in
            pthread_mutex_lock(&mutex)
            jobs.append {
                do throws(TargetError) { result = .success(try body()) } catch { result = .failure(error) }
            }
            submitted += 1
            let ticket = submitted
            pthread_cond_broadcast(&condition)
            while completed < ticket { pthread_cond_wait(&condition, &mutex) }
            pthread_mutex_unlock(&mutex)
        }
        return try result!.get()
    }

    /// Runs a body that cannot fail on the tracer thread and waits for it.
    func run(_ body: () -> Void) {
        try? perform { () throws(TargetError) in body() }
    }

    /// Lets the thread finish its queue and exit. Called from the owner's deinit.
    /// Idempotent (a failed initializer and the deinit that follows may both call it).
    func shutdown() {
        pthread_mutex_lock(&mutex)
        let first = !shuttingDown
        shuttingDown = true
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
        guard first else { return }
        if isCurrent { pthread_detach(thread) } else { pthread_join(thread, nil) }
    }
}
