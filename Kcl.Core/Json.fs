(*
    Json --- the wire codec. Decoding makes two passes over a line: the first finds `action` wherever it sits and proves
    the whole line well-formed, the second reads the fields that action defines, by name. Both passes are linear, so
    a 14 MB processRecords line costs two scans and one base64 decode per record.
*)
module Kcl.Core.Json

open System
open System.Buffers
open System.Text
open System.Runtime.CompilerServices
open System.Text.Json
open Kcl.Core.JsonText
open Kcl.Core.JsonDecode

[<RequireQualifiedAccess>]
type DaemonCharset =
    | Utf8
    | PosixAscii

// ---- decoding -----------------------------------------------------------------------------------------------------

let private actionName = "action"B
// A HashSet, not an F# Set: the first line's decode builds this, and F# Set's code is JIT-compiled on first use, while
// the daemon waits for the `initialize` answer.
let private daemonActions =
    Collections.Generic.HashSet<string>("checkpoint" :: ActionNames.all, StringComparer.Ordinal)

/// The daemon writes `action` first (Jackson's type id), so the line can be decoded in one pass: read the action,
/// decode the body from the same reader, then make sure the rest of the line is well-formed. None when the line
/// does not start that way, or names an action this decoder does not know; the two-pass decode then decides.
let private decodeActionFirst (reader: byref<Utf8JsonReader>) =
    let mutable peek = reader

    if peek.Read() && peek.TokenType = JsonTokenType.PropertyName && peek.ValueTextEquals(ReadOnlySpan actionName) then
        peek.Read() |> ignore

        if peek.TokenType = JsonTokenType.String then
            let action = peek.GetString()

            if daemonActions.Contains action then
                let message = decodeDaemonBody action &peek

                // Bodies with no fields stop early; the rest of the object must still be valid JSON.
                while not (peek.TokenType = JsonTokenType.EndObject && peek.CurrentDepth = 0) do
                    peek.Read() |> ignore

                    if peek.TokenType = JsonTokenType.StartObject || peek.TokenType = JsonTokenType.StartArray then
                        peek.Skip()

                // Trailing content is an error here: the daemon never writes it, so it means a corrupted line.
                peek.Read() |> ignore
                ValueSome message
            else
                ValueNone
        else
            ValueNone
    else
        ValueNone

let private decodeDaemonWith (reader: byref<Utf8JsonReader>) : Result<DaemonMessage, ProtocolError> =
    try
        startObject &reader

        match decodeActionFirst &reader with
        | ValueSome message -> Ok message
        | ValueNone ->
            let mutable body = reader
            let action = findAction (&reader, true)
            Ok(decodeDaemonBody action &body)
    with ProtocolFailure error ->
        Error error

// Apart from decodeDaemonMessage, whose precompiled code would otherwise load the JSON reader's types on its first
// call: the child's first line, `initialize`, is read by hand and answered without them.
[<MethodImpl(MethodImplOptions.NoInlining)>]
let private decodeDaemonSpanByReader (line: ReadOnlySpan<byte>) =
    let mutable reader = Utf8JsonReader(line)
    decodeDaemonWith &reader

let decodeDaemonMessage (line: ReadOnlySpan<byte>) : Result<DaemonMessage, ProtocolError> =
    match JsonDecode.tryDecodeDaemonLayout line with
    | ValueSome message -> Ok message
    | ValueNone -> decodeDaemonSpanByReader line

let internal decodeDaemonByReader (line: ReadOnlySequence<byte>) : Result<DaemonMessage, ProtocolError> =
    let mutable reader = Utf8JsonReader(line)
    decodeDaemonWith &reader

let internal decodeDaemonPieces (batch: JsonDecode.BatchInPieces) (line: ReadOnlySequence<byte>) =
    match batch.Finish line with
    | ValueSome batch -> Ok batch
    | ValueNone -> decodeDaemonByReader line

let internal decodeDaemonSequence (line: ReadOnlySequence<byte>) : Result<DaemonMessage, ProtocolError> =
    decodeDaemonPieces (JsonDecode.BatchInPieces()) line

let decodeDaemonLine (line: string) : Result<DaemonMessage, ProtocolError> =
    withUtf8 line (fun buffer length -> decodeDaemonMessage (ReadOnlySpan(buffer, 0, length)))

let decodeChildMessage (line: ReadOnlySpan<byte>) : Result<ChildMessage, ProtocolError> =
    try
        let mutable reader = Utf8JsonReader(line)
        startObject &reader
        let mutable body = reader
        // Trailing content after the object is accepted, as the daemon does (FAIL_ON_TRAILING_TOKENS is off).
        let action = findAction (&reader, false)
        Ok(decodeChildBody action &body)
    with ProtocolFailure error ->
        Error error

let decodeChildLine (line: string) : Result<ChildMessage, ProtocolError> =
    withUtf8 line (fun buffer length -> decodeChildMessage (ReadOnlySpan(buffer, 0, length)))

// ---- what the child writes ----------------------------------------------------------------------------------------

let encodeChildMessage (message: ChildMessage) : string =
    let builder = StringBuilder(128)

    match message with
    | ChildMessage.Status responseFor ->
        builder.Append "{\"action\":\"status\",\"responseFor\":" |> ignore
        appendQuotedOrNull builder true responseFor
    | ChildMessage.Checkpoint CheckpointTarget.LastDelivered ->
        builder.Append "{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null"
        |> ignore
    | ChildMessage.Checkpoint(CheckpointTarget.At(sequence, subSequence)) ->
        builder.Append "{\"action\":\"checkpoint\",\"sequenceNumber\":" |> ignore
        appendQuoted builder true sequence.Value
        builder.Append ",\"subSequenceNumber\":" |> ignore
        appendInt64OrNull builder subSequence

    builder.Append('}').ToString()

// ---- what the daemon writes ---------------------------------------------------------------------------------------

// The JVM's encoders replace what the charset cannot hold with '?': a lone surrogate in UTF-8, and in US-ASCII every
// non-ASCII code point, a surrogate pair being one (PROTOCOL.md §1.1). .NET's ASCII fallback would write two for a
// pair, hence the hand-written loop.
let private jvmUtf8 =
    Encoding.GetEncoding("utf-8", EncoderReplacementFallback "?", DecoderFallback.ReplacementFallback)

let private toJvmAscii (text: string) =
    let bytes = Array.zeroCreate<byte> text.Length
    let mutable written = 0
    let mutable i = 0

    while i < text.Length do
        let c = text[i]

        if c < '\u0080' then
            bytes[written] <- byte c
        else
            bytes[written] <- byte '?'

            if Char.IsHighSurrogate c && i + 1 < text.Length && Char.IsLowSurrogate text[i + 1] then
                i <- i + 1

        written <- written + 1
        i <- i + 1

    if written = bytes.Length then
        bytes
    else
        bytes[.. written - 1]

// Field order is JsonFriendlyRecord's declaration order, with the @JsonProperty getter `action` last (PROTOCOL.md §2.2).
let private appendRecord (builder: StringBuilder) (record: Record) =
    builder.Append "{\"data\":" |> ignore

    builder.Append('"').Append(Convert.ToBase64String record.Data.Span).Append('"')
    |> ignore

    builder.Append ",\"partitionKey\":" |> ignore
    appendQuotedOrNull builder false record.PartitionKey
    builder.Append ",\"sequenceNumber\":" |> ignore
    appendQuoted builder false record.SequenceNumber.Value
    builder.Append ",\"approximateArrivalTimestamp\":" |> ignore
    appendInt64OrNull builder (record.ApproximateArrivalTimestamp |> Option.map _.ToUnixTimeMilliseconds())

    builder.Append(",\"subSequenceNumber\":").Append(record.SubSequenceNumber).Append(",\"action\":\"record\"}")
    |> ignore

let private appendDaemonMessage (builder: StringBuilder) (message: DaemonMessage) =
    let quotedOrNull (text: string option) =
        appendQuotedOrNull builder false (Option.toObj text)

    builder.Append("{\"action\":\"").Append(message.Action).Append('"') |> ignore

    match message with
    | DaemonMessage.Initialize(shardId, sequence, subSequence) ->
        builder.Append ",\"shardId\":" |> ignore
        appendQuotedOrNull builder false shardId.Value
        builder.Append ",\"sequenceNumber\":" |> ignore
        quotedOrNull (sequence |> Option.map _.Value)
        builder.Append ",\"subSequenceNumber\":" |> ignore
        appendInt64OrNull builder subSequence
    | DaemonMessage.ProcessRecords(records, millisBehindLatest) ->
        builder.Append ",\"records\":[" |> ignore

        records
        |> Array.iteri (fun i record ->
            if i > 0 then
                builder.Append ',' |> ignore

            appendRecord builder record)

        builder.Append "],\"millisBehindLatest\":" |> ignore
        appendInt64OrNull builder millisBehindLatest
    | DaemonMessage.LeaseLost
    | DaemonMessage.ShardEnded
    | DaemonMessage.ShutdownRequested -> ()
    | DaemonMessage.Shutdown reason ->
        builder.Append ",\"reason\":" |> ignore
        appendQuoted builder false reason.WireName
    | DaemonMessage.CheckpointReply(sequence, subSequence, error) ->
        builder.Append ",\"sequenceNumber\":" |> ignore
        quotedOrNull sequence
        builder.Append ",\"subSequenceNumber\":" |> ignore
        appendInt64OrNull builder subSequence
        builder.Append ",\"error\":" |> ignore
        quotedOrNull (error |> Option.map _.Name)

    builder.Append '}' |> ignore

let encodeDaemonMessage (charset: DaemonCharset) (message: DaemonMessage) : byte[] =
    let builder = StringBuilder(256)
    appendDaemonMessage builder message
    let text = builder.ToString()

    match charset with
    | DaemonCharset.Utf8 -> jvmUtf8.GetBytes text
    | DaemonCharset.PosixAscii -> toJvmAscii text
