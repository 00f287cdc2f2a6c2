(*
    The daemon's lines as bytes, for drivers that send many large batches (kcl-local). `Json.encodeDaemonMessage` is
    the reference: it builds the text, then encodes it, then the separator is appended, three copies of a batch that
    may be megabytes. A `processRecords` whose strings need no escaping and are ASCII (every one a generator or a real
    stream gives: digits, base64 and plain partition keys) is written here straight into one array of its exact
    length, with the same bytes. Anything else goes through the reference, so the output never differs from it.
*)
module internal Kcl.Core.DaemonLine

open System
open System.Buffers.Text
open System.Text
open Kcl.Core.JsonDecode.Layout

// Field order and spelling as Json.appendRecord writes them (JsonFriendlyRecord's declaration order).
let private dataOpen = Array.append dataField "\""B
let private nullWord = "null"B

// A string that Jackson writes as itself between quotes and that both charsets encode byte for byte: printable
// ASCII without `"` or `\`.
let private isPlain (text: string) =
    not (isNull text)
    && text.AsSpan().IndexOfAnyExceptInRange(' ', '~') < 0
    && text.AsSpan().IndexOfAny('"', '\\') < 0

// 10^0 to 10^18: every power of ten an int64 holds.
let private powersOfTen = Array.init 19 (fun power -> pown 10L power)

// Without a division per digit: a 13-digit arrival time and a sub-sequence number per record, counted and written.
let private digitCount (value: int64) =
    if value = Int64.MinValue then
        20
    elif value = 0L then
        1
    else
        let magnitude = abs value
        // The count from log2 (1233 / 4096 is about log10 2): exact, or one short.
        let estimate = ((Numerics.BitOperations.Log2(uint64 magnitude) + 1) * 1233) >>> 12
        let digits = if magnitude < powersOfTen[estimate] then estimate else estimate + 1
        if value < 0L then digits + 1 else digits

let private optionalLength (value: int64 option) =
    match value with
    | Some number -> digitCount number
    | None -> nullWord.Length

let private arrivalLength (arrival: DateTimeOffset option) =
    match arrival with
    | Some time -> digitCount (time.ToUnixTimeMilliseconds())
    | None -> nullWord.Length

let private quotedLength (text: string) = text.Length + 2

// A sequence number is plain by construction: digits, or a sentinel's name.
let private plainRecord (record: Record) =
    isNull record.PartitionKey || isPlain record.PartitionKey

let private recordLength (record: Record) =
    let data =
        dataOpen.Length + Base64.GetMaxEncodedToUtf8Length record.Data.Length + 1

    let partitionKey =
        if isNull record.PartitionKey then
            nullWord.Length
        else
            quotedLength record.PartitionKey

    data
    + partitionKeyField.Length
    + partitionKey
    + sequenceNumberField.Length
    + quotedLength record.SequenceNumber.Value
    + arrivalField.Length
    + arrivalLength record.ApproximateArrivalTimestamp
    + subSequenceNumberField.Length
    + digitCount record.SubSequenceNumber
    + recordEnd.Length

/// Writes into a span that was sized for exactly what goes in it.
type internal Writer(buffer: byte[]) =
    let mutable position = 0

    member _.Position = position

    member _.Bytes(bytes: byte[]) =
        bytes.AsSpan().CopyTo(buffer.AsSpan position)
        position <- position + bytes.Length

    member _.Byte(value: byte) =
        buffer[position] <- value
        position <- position + 1

    // Only text already found to be ASCII comes here, so the narrowing cannot stop short.
    member _.Ascii(text: string) =
        let mutable written = 0
        Ascii.FromUtf16(text.AsSpan(), buffer.AsSpan position, &written) |> ignore
        position <- position + written

    member this.Quoted(text: string) =
        this.Byte '"'B
        this.Ascii text
        this.Byte '"'B

    member _.Number(value: int64) =
        let mutable written = 0
        Utf8Formatter.TryFormat(value, buffer.AsSpan position, &written) |> ignore
        position <- position + written

    member this.Optional(value: int64 option) =
        match value with
        | Some number -> this.Number number
        | None -> this.Bytes nullWord

    member _.Base64(data: ReadOnlySpan<byte>) =
        let mutable consumed = 0
        let mutable written = 0

        Base64.EncodeToUtf8(data, buffer.AsSpan position, &consumed, &written)
        |> ignore

        position <- position + written

let private writeRecord (writer: Writer) (record: Record) =
    writer.Bytes dataOpen
    writer.Base64 record.Data.Span
    writer.Byte '"'B

    writer.Bytes partitionKeyField

    if isNull record.PartitionKey then
        writer.Bytes nullWord
    else
        writer.Quoted record.PartitionKey

    writer.Bytes sequenceNumberField
    writer.Quoted record.SequenceNumber.Value
    writer.Bytes arrivalField

    match record.ApproximateArrivalTimestamp with
    | Some time -> writer.Number(time.ToUnixTimeMilliseconds())
    | None -> writer.Bytes nullWord

    writer.Bytes subSequenceNumberField
    writer.Number record.SubSequenceNumber
    writer.Bytes recordEnd

let private reference charset (separator: string) message =
    Array.append (Json.encodeDaemonMessage charset message) (Encoding.ASCII.GetBytes separator)

/// A line being written a slice at a time, for a driver with other work between slices: kcl-local splices the batch
/// before it into the child's pipe while the child reads, and encodes this one whenever the pipe is full.
[<Sealed>]
// `records` null: the line is already whole. Otherwise a `processRecords` line of exactly `length` bytes, written from
// the first byte of `line`, and ended by `ending`.
type LineWriting internal (line: byte[], length: int, records: Record[], ending: Writer -> unit) =
    let writer = Writer line
    let mutable next = 0
    let mutable finished = isNull records

    do
        if not finished then
            writer.Bytes batchStart

    /// A line that is already whole.
    new(line: ArraySegment<byte>) = LineWriting(line.Array, line.Count, null, ignore)

    /// Writes whole records until at least `budget` more bytes are written or the line is done; true once it is done.
    member _.Continue(budget: int) =
        if not finished then
            let stop = int64 writer.Position + int64 budget

            while next < records.Length && int64 writer.Position < stop do
                if next > 0 then
                    writer.Byte ','B

                writeRecord writer records[next]
                next <- next + 1

            if next = records.Length then
                ending writer

                // The lengths are exact; a mismatch is a bug here, never a reason to send a padded line.
                if writer.Position <> length then
                    invalidOp (sprintf "DaemonLine: wrote %d bytes of a %d-byte line" writer.Position length)

                finished <- true

        finished

    /// The array the line is written into.
    member _.Array = line

    /// Whether the whole line is written.
    member _.Finished = finished

    /// The line, once it is whole.
    member _.Line =
        if not finished then
            invalidOp "DaemonLine: the line is not written yet"

        ArraySegment(line, 0, length)

// `inPlace` says what becomes of a line the reference encodes: kept as it is, or copied into an array from `buffer`.
let private start (inPlace: bool) (buffer: int -> byte[]) charset (separator: string) (message: DaemonMessage) =
    match message with
    | DaemonMessage.ProcessRecords(records, millisBehindLatest) when
        Ascii.IsValid separator && Array.forall plainRecord records
        ->
        let mutable length =
            batchStart.Length
            + max 0 (records.Length - 1)
            + batchEnd.Length
            + optionalLength millisBehindLatest
            + 1
            + separator.Length

        for record in records do
            length <- length + recordLength record

        let ending (writer: Writer) =
            writer.Bytes batchEnd
            writer.Optional millisBehindLatest
            writer.Byte '}'B
            writer.Ascii separator

        LineWriting(buffer length, length, records, ending)
    | _ when inPlace -> LineWriting(ArraySegment(reference charset separator message))
    | _ ->
        let whole = reference charset separator message
        let line = buffer whole.Length
        whole.CopyTo(line, 0)
        LineWriting(ArraySegment(line, 0, whole.Length))

/// Starts the line the daemon writes for the message, as `encode` gives it, in the first bytes of an array from
/// `buffer`, which is given the line's length and may return a larger array (one the caller reuses for each batch,
/// say). A `processRecords` line is written by `Continue`; any other is whole at once.
let startInto (buffer: int -> byte[]) (charset: Json.DaemonCharset) (separator: string) (message: DaemonMessage) =
    start false buffer charset separator message

let private whole (writing: LineWriting) =
    writing.Continue Int32.MaxValue |> ignore
    writing.Line

/// The line the daemon writes for the message, as `encode` gives it, in the first bytes of an array from `buffer`,
/// which is given the line's length and may return a larger array (one the caller reuses for each batch, say).
let encodeInto
    (buffer: int -> byte[])
    (charset: Json.DaemonCharset)
    (separator: string)
    (message: DaemonMessage)
    : ArraySegment<byte> =
    whole (startInto buffer charset separator message)

/// The line the daemon writes for the message: its JSON exactly as `Json.encodeDaemonMessage` gives it, then the
/// separator, in one array.
let encode (charset: Json.DaemonCharset) (separator: string) (message: DaemonMessage) : byte[] =
    // Not zeroed: every byte is written (the writer checks it), and zeroing a batch's line cost about as much as
    // base64-encoding its payloads in a profile of kcl-local.
    (whole (start true (fun length -> GC.AllocateUninitializedArray<byte> length) charset separator message)).Array
