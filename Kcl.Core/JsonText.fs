(*
    JsonText --- the low-level pieces of the wire codec: string escaping in the two dialects the protocol needs
    (the daemon's Jackson output and the child's ASCII-only output), and reading helpers over Utf8JsonReader.
    Decoding reports problems by raising DecodeFailure; Json.fs catches it at the edge, so no exception escapes.
    A raise is used instead of Result plumbing because Utf8JsonReader is a ref struct and cannot be captured by the
    closures a Result pipeline would need.
*)
module internal Kcl.Core.JsonText

open System
open System.Buffers
open System.Text
open System.Text.Json

/// Ends a decode with a protocol error; caught in Json.fs.
exception DecodeFailure of ProtocolError

let fail error = raise (DecodeFailure error)

// Jackson's CharTypes.HC: escapes use upper-case hex digits.
let private hexDigits = "0123456789ABCDEF"

let private appendUnicodeEscape (builder: StringBuilder) (c: char) =
    let code = int c

    builder
        .Append("\\u")
        .Append(hexDigits[(code >>> 12) &&& 0xF])
        .Append(hexDigits[(code >>> 8) &&& 0xF])
        .Append(hexDigits[(code >>> 4) &&& 0xF])
        .Append(hexDigits[code &&& 0xF])
    |> ignore

/// Appends `text` as a quoted JSON string. Jackson's default escapes (CharTypes.sOutputEscapes128): `"` and `\`,
/// the short forms \b \t \n \f \r, any other control character as \u00XX; `/` and DEL stay raw. With `asciiOnly`,
/// every UTF-16 unit above 0x7F is also escaped, so a surrogate pair becomes two escapes (what a child must write,
/// PROTOCOL.md §1.1); without it, non-ASCII stays raw for the charset to encode, as Jackson leaves it.
let appendQuoted (builder: StringBuilder) (asciiOnly: bool) (text: string) =
    builder.Append '"' |> ignore
    let mutable runStart = 0

    for i in 0 .. text.Length - 1 do
        let c = text[i]

        if c < ' ' || c = '"' || c = '\\' || (asciiOnly && c > '\u007F') then
            builder.Append(text, runStart, i - runStart) |> ignore
            runStart <- i + 1

            match c with
            | '"' -> builder.Append "\\\"" |> ignore
            | '\\' -> builder.Append "\\\\" |> ignore
            | '\b' -> builder.Append "\\b" |> ignore
            | '\t' -> builder.Append "\\t" |> ignore
            | '\n' -> builder.Append "\\n" |> ignore
            | '\012' -> builder.Append "\\f" |> ignore
            | '\r' -> builder.Append "\\r" |> ignore
            | _ -> appendUnicodeEscape builder c

    builder.Append(text, runStart, text.Length - runStart).Append '"' |> ignore

/// Appends a JSON string, or `null` for a null reference, as Jackson writes a null field.
let appendQuotedOrNull (builder: StringBuilder) (asciiOnly: bool) (text: string) =
    if isNull text then
        builder.Append "null" |> ignore
    else
        appendQuoted builder asciiOnly text

/// Appends an optional integer as a JSON number or `null`.
let appendInt64OrNull (builder: StringBuilder) (value: int64 option) =
    match value with
    | Some number -> builder.Append number |> ignore
    | None -> builder.Append "null" |> ignore

/// How a token reads in an error message.
let describeToken (token: JsonTokenType) =
    match token with
    | JsonTokenType.Null -> "null"
    | JsonTokenType.String -> "a string"
    | JsonTokenType.Number -> "a number"
    | JsonTokenType.True
    | JsonTokenType.False -> "a boolean"
    | JsonTokenType.StartObject -> "an object"
    | JsonTokenType.StartArray -> "an array"
    | other -> string other

// Long enough to recognise a value in a log line, short enough not to flood it.
let private shown (text: string) =
    if text.Length > 40 then
        text.Substring(0, 40) + "…"
    else
        text

/// The current token's raw bytes, whether the line came in one piece or several.
let valueBytes (reader: byref<Utf8JsonReader>) : ReadOnlySpan<byte> =
    if reader.HasValueSequence then
        ReadOnlySpan(reader.ValueSequence.ToArray())
    else
        reader.ValueSpan

/// Jackson's coercion of a fractional JSON number into a Java `long`: truncated, or None outside the 64-bit range.
let truncateToInt64 (value: float) =
    let truncated = Math.Truncate value

    if truncated >= -9.2233720368547758e18 && truncated < 9.2233720368547758e18 then
        Some(int64 truncated)
    else
        None

/// The raw text of the current number token, cut for an error message.
let numberText (reader: byref<Utf8JsonReader>) =
    shown (Encoding.UTF8.GetString(valueBytes &reader))

/// The current string token's value. Invalid UTF-8 or a lone surrogate escape is the field's fault, not the line's.
let stringValue (reader: byref<Utf8JsonReader>, action: string, field: string) =
    try
        reader.GetString()
    with :? InvalidOperationException as ex ->
        fail (ProtocolError.InvalidValue(action, field, ex.Message))

/// Moves to the next property of the current object: `ValueSome name` with the reader on the value, or `ValueNone` at
/// the object's end. The caller must consume the value (read it, or `Skip` it) before asking again.
let nextProperty (reader: byref<Utf8JsonReader>) =
    reader.Read() |> ignore

    if reader.TokenType = JsonTokenType.EndObject then
        ValueNone
    else
        let name = reader.GetString()
        reader.Read() |> ignore
        ValueSome name

/// A string or null value.
let readStringOrNull (reader: byref<Utf8JsonReader>, action: string, field: string) =
    match reader.TokenType with
    | JsonTokenType.Null -> None
    | JsonTokenType.String -> Some(stringValue (&reader, action, field))
    | other -> fail (ProtocolError.WrongType(action, field, "a string or null", describeToken other))

/// A JSON integer that fits in 64 bits, or null.
let readInt64OrNull (reader: byref<Utf8JsonReader>, action: string, field: string) =
    match reader.TokenType with
    | JsonTokenType.Null -> None
    | JsonTokenType.Number ->
        match reader.TryGetInt64() with
        | true, value -> Some value
        | false, _ ->
            let detail = sprintf "%s is not an integer in the 64-bit range" (numberText &reader)
            fail (ProtocolError.InvalidValue(action, field, detail))
    | other -> fail (ProtocolError.WrongType(action, field, "an integer or null", describeToken other))

/// A JSON integer that fits in 64 bits, or null, without allocating: for fields read once per record.
let readInt64OrNullValue (reader: byref<Utf8JsonReader>, action: string, field: string) =
    match reader.TokenType with
    | JsonTokenType.Number ->
        match reader.TryGetInt64() with
        | true, value -> ValueSome value
        | false, _ -> readInt64OrNull (&reader, action, field) |> ValueOption.ofOption
    | _ -> readInt64OrNull (&reader, action, field) |> ValueOption.ofOption

/// Parses a sequence number, naming the field when it is not one.
let sequenceNumber (action: string) (field: string) (text: string) =
    match SequenceNumber.tryParse text with
    | Ok value -> value
    | Error detail -> fail (ProtocolError.InvalidValue(action, field, detail))

// ---- decoding: the top level of a line ----------------------------------------------------------------------------

let startObject (reader: byref<Utf8JsonReader>) =
    // Read throws on an empty or invalid line, so a false here cannot happen with isFinalBlock; guard anyway.
    if not (reader.Read()) then
        fail (ProtocolError.MalformedJson "the line holds no JSON value")

    if reader.TokenType <> JsonTokenType.StartObject then
        fail (ProtocolError.NotAnObject(describeToken reader.TokenType))

/// Pass one, from the object's start. With `strictEnd`, anything but whitespace after the object is malformed.
let findAction (reader: byref<Utf8JsonReader>, strictEnd: bool) =
    let mutable action = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "action" ->
            match reader.TokenType with
            | JsonTokenType.String -> action <- Some(stringValue (&reader, "", "action"))
            | JsonTokenType.Null -> action <- None
            | other -> fail (ProtocolError.WrongType("", "action", "a string", describeToken other))
        | ValueSome _ -> reader.Skip()

    // Utf8JsonReader throws on trailing non-whitespace after a complete value.
    if strictEnd then
        reader.Read() |> ignore

    match action with
    | Some name -> name
    | None -> fail (ProtocolError.MissingField("", "action"))

// Maps the failures a decode can raise; anything else is a bug and is left to surface.
let (|ProtocolFailure|_|) (ex: exn) =
    match ex with
    | DecodeFailure error -> Some error
    | :? JsonException -> Some(ProtocolError.MalformedJson ex.Message)
    // Invalid UTF-8 in a property name surfaces from GetString as InvalidOperationException.
    | :? InvalidOperationException -> Some(ProtocolError.MalformedJson ex.Message)
    | _ -> None

let withUtf8 (line: string) (decode: byte[] -> int -> Result<'T, ProtocolError>) =
    if isNull line then
        Error(ProtocolError.MalformedJson "the line is null")
    else
        // Pooling the line's bytes is safe: every decoded string and payload is a fresh copy.
        let buffer = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetByteCount line)

        try
            decode buffer (Encoding.UTF8.GetBytes(line, 0, line.Length, buffer, 0))
        finally
            ArrayPool<byte>.Shared.Return buffer
