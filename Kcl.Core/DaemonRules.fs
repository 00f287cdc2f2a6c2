(*
    The daemon's rules that the session applies but the codec does not know: how the KCL orders checkpoint positions
    (`ExtendedSequenceNumber.compareTo`/`equals`), and how Jackson reads a status or checkpoint line in the few places
    where it is more lenient than `Json.decodeChildMessage` (values it coerces, echoes it keeps).
*)
module internal Kcl.Core.DaemonRules

open System
open System.Globalization
open System.Text
open System.Text.Json

// ---- ExtendedSequenceNumber ordering -------------------------------------------------------------------------------

// compareTo: SHARD_END above everything, the other sentinels equal to each other and below every digit string.
let private rank (sequence: string) =
    match sequence with
    // Every record's number takes this path, up to 10,000 times a batch in the session's fold over a batch.
    | _ when sequence.Length > 0 && Char.IsAsciiDigit sequence[0] -> 1
    | "SHARD_END" -> 2
    | "TRIM_HORIZON"
    | "LATEST"
    | "AT_TIMESTAMP" -> 0
    | _ -> 1

/// Compares two digit strings numerically, whatever their length and leading zeros, as `compareTo` does through
/// BigInteger, without parsing or allocating.
let compareDigits (a: string) (b: string) =
    let a = a.AsSpan().TrimStart '0'
    let b = b.AsSpan().TrimStart '0'

    if a.Length <> b.Length then
        compare a.Length b.Length
    else
        sign (a.SequenceCompareTo b)

/// `ExtendedSequenceNumber.compareTo` of two positions given by their parts: negative, zero or positive.
let comparePositions (sequenceA: SequenceNumber) (subA: int64) (sequenceB: SequenceNumber) (subB: int64) =
    let rankA = rank sequenceA.Value
    let rankB = rank sequenceB.Value

    if rankA <> rankB then
        compare rankA rankB
    elif rankA <> 1 then
        0
    else
        match compareDigits sequenceA.Value sequenceB.Value with
        | 0 -> compare subA subB
        | order -> order

/// `ExtendedSequenceNumber.compareTo`: negative, zero or positive.
let compareExtended (a: ExtendedSequenceNumber) (b: ExtendedSequenceNumber) =
    comparePositions a.SequenceNumber a.SubSequenceNumber b.SequenceNumber b.SubSequenceNumber

/// `ExtendedSequenceNumber.equals`: the sequence text exactly (not numerically) and the sub-sequence number.
let equalsExtended (a: ExtendedSequenceNumber) (b: ExtendedSequenceNumber) =
    a.SequenceNumber.Value = b.SequenceNumber.Value
    && a.SubSequenceNumber = b.SubSequenceNumber

// ---- Jackson's reading of status and checkpoint lines --------------------------------------------------------------

/// A status or checkpoint line as the daemon's Jackson reads it.
[<RequireQualifiedAccess>]
type JacksonRead =
    /// `StatusMessage` with its `responseFor`, null when missing.
    | Status of responseFor: string option
    /// `CheckpointMessage` with its fields after coercion, as the reply echoes them.
    | Checkpoint of sequenceNumber: string option * subSequenceNumber: int64 option

exception private Unreadable

// StringDeserializer coerces scalars: 12345 is "12345", true is "true".
let private coercedString (value: JsonElement) =
    match value.ValueKind with
    | JsonValueKind.Null -> None
    | JsonValueKind.String -> Some(value.GetString())
    | JsonValueKind.Number -> Some(value.GetRawText())
    | JsonValueKind.True -> Some "true"
    | JsonValueKind.False -> Some "false"
    | _ -> raise Unreadable

// The Long field, coerced as the codec coerces it: "5" is 5, 1.5 is 1, anything out of range is unreadable.
let private coercedLong (value: JsonElement) =
    match value.ValueKind with
    | JsonValueKind.Null -> None
    | JsonValueKind.Number ->
        match value.TryGetInt64() with
        | true, number -> Some number
        | false, _ ->
            match JsonText.truncateToInt64 (value.GetDouble()) with
            | Some value -> Some value
            | None -> raise Unreadable
    | JsonValueKind.String ->
        match Int64.TryParse(value.GetString().Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) with
        | true, number -> Some number
        | false, _ -> raise Unreadable
    | _ -> raise Unreadable

/// Reads the first JSON value of a status or checkpoint line as Jackson would; `None` when Jackson would fail.
/// Trailing text is ignored; a key the message class lacks makes the line unreadable; the last duplicate key wins.
let readStatusOrCheckpoint (line: string) : JacksonRead option =
    try
        let mutable reader = Utf8JsonReader(ReadOnlySpan(Encoding.UTF8.GetBytes line))
        use document = JsonDocument.ParseValue(&reader)
        let root = document.RootElement

        if root.ValueKind <> JsonValueKind.Object then
            None
        else
            let properties =
                root.EnumerateObject() |> Seq.map (fun p -> p.Name, p.Value) |> List.ofSeq

            let action =
                properties
                |> List.tryFindBack (fun (name, _) -> name = "action")
                |> Option.bind (fun (_, value) -> coercedString value)

            match action with
            | Some "status" ->
                let responseFor =
                    properties
                    |> List.fold
                        (fun found (name, value) ->
                            match name with
                            | "action" -> found
                            | "responseFor" -> coercedString value
                            | _ -> raise Unreadable)
                        None

                Some(JacksonRead.Status responseFor)
            | Some "checkpoint" ->
                let sequence, subSequence =
                    properties
                    |> List.fold
                        (fun (sequence, subSequence) (name, value) ->
                            match name with
                            | "action" -> sequence, subSequence
                            | "sequenceNumber" -> coercedString value, subSequence
                            | "subSequenceNumber" -> sequence, coercedLong value
                            | "error" ->
                                coercedString value |> ignore
                                sequence, subSequence
                            | _ -> raise Unreadable)
                        (None, None)

                Some(JacksonRead.Checkpoint(sequence, subSequence))
            | _ -> None
    with _ ->
        None
