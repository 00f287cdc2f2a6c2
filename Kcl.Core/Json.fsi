/// The wire codec, in both directions: what the child reads and writes, and what a daemon reads and writes (for the
/// test kit and the local daemon). Decoding never throws: every problem is a `ProtocolError` that names it.
[<RequireQualifiedAccess>]
module Kcl.Core.Json

open System

/// How a daemon's JVM turns its JSON text into bytes (PROTOCOL.md §1.1).
[<RequireQualifiedAccess>]
type DaemonCharset =
    /// JDK 18 and later, or any JDK in a UTF-8 locale: non-ASCII characters are written raw as UTF-8.
    | Utf8
    /// JDK 17 or earlier in a POSIX locale: every non-ASCII character (code point) is written as `?`.
    | PosixAscii

/// Decodes one line the daemon wrote (UTF-8, without its line terminator) into a message.
/// Lines have no length limit. Empty lines are the caller's to skip.
/// Keys may come in any order and unknown keys are ignored; the nulls POLICY.md allows are mapped to defaults. Anything
/// after the object other than whitespace is `MalformedJson` (the daemon never writes it). An unknown `action` is
/// `UnknownAction`, so that a newer daemon's message can still be answered. Each record's `Data` is a new array.
val decodeDaemonMessage: line: ReadOnlySpan<byte> -> Result<DaemonMessage, ProtocolError>

/// Decodes one line the daemon wrote that arrived in pieces, as `decodeDaemonMessage` does; for lines longer than the
/// reader's buffer.
val internal decodeDaemonSequence: line: System.Buffers.ReadOnlySequence<byte> -> Result<DaemonMessage, ProtocolError>

/// Decodes a line that arrived in pieces, as `decodeDaemonSequence` does, going on from what `batch` decoded of it
/// while it was read.
val internal decodeDaemonPieces:
    batch: JsonDecode.BatchInPieces -> line: System.Buffers.ReadOnlySequence<byte> -> Result<DaemonMessage, ProtocolError>

/// Decodes one line with the JSON reader alone, never by the hand-written reading of the daemon's own layout: what
/// that reading must agree with, for tests.
val internal decodeDaemonByReader: line: System.Buffers.ReadOnlySequence<byte> -> Result<DaemonMessage, ProtocolError>

/// Decodes one line the daemon wrote, given as text.
val decodeDaemonLine: line: string -> Result<DaemonMessage, ProtocolError>

/// Encodes a child message as the child writes it: ASCII-only JSON (non-ASCII escaped as `\uXXXX`), no BOM, no line
/// terminator, and exactly the keys of PROTOCOL.md §3. A status carries `action` and `responseFor` and nothing else.
val encodeChildMessage: message: ChildMessage -> string

/// Decodes one line a child wrote, as a daemon reads it (for the test kit and the local daemon).
/// Mirrors the daemon's Jackson where that is cheap (PROTOCOL.md §3.3): a key the message does not define is an
/// `InvalidValue` naming it (the daemon skips such a line), the action is case-sensitive, anything after the first
/// object is ignored, and scalars are coerced as Jackson coerces them (`12345` as a sequence number, `"5"` or `1.5`
/// as a sub-sequence number). A daemon-side action (`initialize`...) is `UnknownAction`: the daemon ignores such a line.
val decodeChildMessage: line: ReadOnlySpan<byte> -> Result<ChildMessage, ProtocolError>

/// Decodes one line a child wrote, given as text.
val decodeChildLine: line: string -> Result<ChildMessage, ProtocolError>

/// Encodes a daemon message byte for byte as the daemon's Jackson writes it: the daemon's key order, null fields kept,
/// compact, no line terminator, in the given charset.
val encodeDaemonMessage: charset: DaemonCharset -> message: DaemonMessage -> byte[]
