import Foundation

/// A minimal QEMU Machine Protocol client: enough to ask QEMU to quit and to read its events.
///
/// QMP speaks one JSON object per line: a greeting, then a reply (`"return"` or `"error"`) per
/// command, with asynchronous `"event"` lines in between.
final class QMPClient {
    private let connection: SocketConnection
    private var pending: [UInt8] = []
    /// Event lines read while waiting for a command's reply, for `events(quietFor:)`.
    private var events: [String] = []

    init(socketPath: String, timeout: Double = 2) throws(LabError) {
        connection = try SocketConnection.connectUnix(socketPath, timeout: timeout)
        let greeting = try readMessage(timeout: timeout)
        guard greeting.contains("\"QMP\"") else {
            throw .qmpProtocol(socket: socketPath, expected: "the QMP greeting", found: greeting)
        }
        _ = try execute("qmp_capabilities", timeout: timeout)
    }

    /// Sends `{"execute": command}` and returns the reply line. QEMU may close the socket right
    /// after answering `quit`; an empty reply then means it went away, which is what quit asks for.
    @discardableResult
    func execute(_ command: String, timeout: Double = 2) throws(LabError) -> String {
        try connection.write(Array("{\"execute\": \"\(command)\"}\n".utf8))
        while true {
            let message = try readMessage(timeout: timeout)
            if message.isEmpty || message.contains("\"return\"") { return message }
            if message.contains("\"error\"") {
                throw .qmpProtocol(socket: connection.name, expected: "a reply to \(command)", found: message)
            }
            // An event: kept for events(quietFor:), and keep reading.
            events.append(message)
        }
    }

    /// The lines that arrive until none has for `quietFor` seconds (events, between commands).
    func events(quietFor: Double) throws(LabError) -> [String] {
        var lines = events
        events = []
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(String(decoding: pending[..<newline], as: UTF8.self))
                pending.removeSubrange(0...newline)
                continue
            }
            guard let n = try connection.read(into: &pending, timeout: quietFor), n > 0 else { return lines }
        }
    }

    /// One line; "" at end of stream.
    private func readMessage(timeout: Double) throws(LabError) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(0...newline)
                return line
            }
            guard let n = try connection.read(into: &pending, timeout: deadline.timeIntervalSinceNow) else {
                throw .qmpProtocol(socket: connection.name, expected: "a line within \(timeout) s",
                                   found: String(decoding: pending, as: UTF8.self))
            }
            if n == 0 { return "" }
        }
    }
}
