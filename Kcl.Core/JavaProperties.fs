(*
    A reader for the daemon's properties file with java.util.Properties.load's syntax, so that a file the real
    daemon accepts means the same to kcl-local and kcl-bootstrap: `=`, `:` or white space between key and value, `#` and `!` comment lines,
    a trailing odd backslash continuing a line, and the escapes \t \n \r \f \uXXXX (any other escaped character
    stands for itself).
*)
[<RequireQualifiedAccess>]
module Kcl.Core.JavaProperties

open System
open System.Text

let private isWhite c = c = ' ' || c = '\t' || c = '\f'

/// Natural lines, as `Properties.LineReader` splits them: "\n", "\r" and "\r\n" all end one.
let private naturalLines (text: string) =
    text.Replace("\r\n", "\n").Replace('\r', '\n').Split('\n')

let private endsWithOddBackslashes (line: string) =
    let mutable count = 0
    let mutable i = line.Length - 1

    while i >= 0 && line[i] = '\\' do
        count <- count + 1
        i <- i - 1

    count % 2 = 1

/// Logical lines: comments and blank lines dropped, continuations joined (a continued line's leading white space
/// is skipped). A comment line never continues, as in Java.
let private logicalLines (text: string) =
    let lines = naturalLines text
    let result = ResizeArray<string>()
    let mutable i = 0

    while i < lines.Length do
        let line = lines[i].TrimStart(' ', '\t', '\f')
        i <- i + 1

        if line.Length > 0 && line[0] <> '#' && line[0] <> '!' then
            let mutable logical = line

            while endsWithOddBackslashes logical && i <= lines.Length do
                logical <- logical.Substring(0, logical.Length - 1)

                if i < lines.Length then
                    logical <- logical + lines[i].TrimStart(' ', '\t', '\f')

                i <- i + 1

            result.Add logical

    List.ofSeq result

/// Resolves escapes (`Properties.loadConvert`); a malformed \uXXXX is an error, as Java's IllegalArgumentException.
let private unescape (text: string) : Result<string, string> =
    let out = StringBuilder(text.Length)
    let mutable error = None
    let mutable i = 0

    while error.IsNone && i < text.Length do
        let c = text[i]
        i <- i + 1

        if c <> '\\' then
            out.Append c |> ignore
        elif i < text.Length then
            let e = text[i]
            i <- i + 1

            match e with
            | 't' -> out.Append '\t' |> ignore
            | 'n' -> out.Append '\n' |> ignore
            | 'r' -> out.Append '\r' |> ignore
            | 'f' -> out.Append '\f' |> ignore
            | 'u' ->
                if i + 4 <= text.Length && text.Substring(i, 4) |> Seq.forall Char.IsAsciiHexDigit then
                    out.Append(char (Convert.ToInt32(text.Substring(i, 4), 16))) |> ignore
                    i <- i + 4
                else
                    error <- Some "Malformed \\uxxxx encoding."
            | other -> out.Append other |> ignore

    match error with
    | Some message -> Error message
    | None -> Ok(out.ToString())

/// Splits a logical line at the first unescaped `=`, `:` or white space; white space and then one `=` or `:` may
/// follow the key.
let private splitEntry (line: string) =
    let mutable i = 0
    let mutable stop = false

    while not stop && i < line.Length do
        match line[i] with
        | '\\' -> i <- i + 2
        | '='
        | ':' -> stop <- true
        | c when isWhite c -> stop <- true
        | _ -> i <- i + 1

    let keyEnd = min i line.Length
    let mutable j = keyEnd

    while j < line.Length && isWhite line[j] do
        j <- j + 1

    if j < line.Length && (line[j] = '=' || line[j] = ':') then
        j <- j + 1

    while j < line.Length && isWhite line[j] do
        j <- j + 1

    line.Substring(0, keyEnd), line.Substring(j)

/// Parses the text of a properties file into its entries in file order; a later duplicate replaces an earlier one.
/// The only error is a malformed \uXXXX escape.
let parse (text: string) : Result<(string * string) list, string> =
    let entries =
        logicalLines text
        |> List.map (fun line ->
            let key, value = splitEntry line

            match unescape key, unescape value with
            | Ok k, Ok v -> Ok(k, v)
            | Error e, _
            | _, Error e -> Error(sprintf "%s in the line %A" e line))

    match
        entries
        |> List.tryPick (function
            | Error e -> Some e
            | Ok _ -> None)
    with
    | Some error -> Error error
    | None ->
        let pairs =
            entries
            |> List.choose (function
                | Ok pair -> Some pair
                | Error _ -> None)

        let last = pairs |> List.mapi (fun i (k, _) -> k, i) |> Map.ofList

        Ok(
            pairs
            |> List.indexed
            |> List.filter (fun (i, (k, _)) -> last[k] = i)
            |> List.map snd
        )

/// Reads a properties file as `Properties.load(InputStream)` does: as ISO-8859-1, so any byte is one character.
let load (path: string) : Result<(string * string) list, string> =
    parse (IO.File.ReadAllText(path, Encoding.Latin1))
