/// The signer against every case of the AWS SigV4 test suite (header signing).
module Kcl.Kinesis.Tests.SigV4Tests

open System
open System.IO
open System.Text
open System.Text.Json
open Xunit
open Kcl.Kinesis

let suite = Path.Combine(AppContext.BaseDirectory, "sigv4-test-suite")

/// Every case folder's name.
let cases =
    TheoryData<string>(
        Directory.GetDirectories suite
        |> Array.map Path.GetFileName
        |> Array.sort
    )

/// A request.txt: its request line, raw header lines, the headers as (name, value) with folded lines joined, body.
let parseRequest (text: string) =
    let text = text.Replace("\r\n", "\n")
    let headEnd = text.IndexOf "\n\n"
    let head, body =
        if headEnd < 0 then text.TrimEnd('\n'), "" else text.Substring(0, headEnd), text.Substring(headEnd + 2)

    let lines = head.Split '\n' |> List.ofArray
    let requestLine = lines.Head
    let headerLines = lines.Tail

    let headers =
        headerLines
        |> List.fold
            (fun acc (line: string) ->
                if (line.StartsWith " " || line.StartsWith "\t") && not (List.isEmpty acc) then
                    let (n, v) = List.head acc
                    (n, v + "\n" + line) :: List.tail acc
                else
                    let i = line.IndexOf ':'
                    (line.Substring(0, i), line.Substring(i + 1)) :: acc)
            []
        |> List.rev

    let methodEnd = requestLine.IndexOf ' '
    let target = requestLine.Substring(methodEnd + 1, requestLine.LastIndexOf ' ' - methodEnd - 1)
    let path, query =
        match target.IndexOf '?' with
        | -1 -> target, ""
        | i -> target.Substring(0, i), target.Substring(i + 1)

    requestLine, headerLines, headers, requestLine.Substring(0, methodEnd), path, query, body

let internal signCase (name: string) =
    let dir = Path.Combine(suite, name)
    let requestText = File.ReadAllText(Path.Combine(dir, "request.txt"))
    let requestLine, headerLines, headers, method, path, query, body = parseRequest requestText
    use context = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "context.json")))
    let root = context.RootElement
    let creds = root.GetProperty "credentials"

    let token =
        match creds.TryGetProperty "token" with
        | true, t -> t.GetString()
        | _ -> null

    let flag (n: string) =
        match root.TryGetProperty n with
        | true, v -> v.GetBoolean()
        | _ -> false

    let signed =
        SigV4.sign
            {
                Credentials = AwsCredentials(creds.GetProperty("access_key_id").GetString(), creds.GetProperty("secret_access_key").GetString(), token)
                Region = root.GetProperty("region").GetString()
                Service = root.GetProperty("service").GetString()
                Time = DateTimeOffset.Parse(root.GetProperty("timestamp").GetString()).UtcDateTime
                Normalize = flag "normalize"
                SignBody = flag "sign_body"
                OmitSessionToken = flag "omit_session_token"
            }
            {
                Method = method
                Path = path
                Query = query
                Headers = headers
                Body = Encoding.UTF8.GetBytes body
            }

    let signedRequest =
        String.concat
            "\n"
            [
                yield requestLine
                yield! headerLines
                for n, v in signed.AddedHeaders do
                    yield n + ":" + v
                if body <> "" then
                    yield ""
                    yield body
            ]

    let expected file =
        File.ReadAllText(Path.Combine(dir, file)).Replace("\r\n", "\n").TrimEnd('\n')

    signed, signedRequest, expected

[<Theory; MemberData(nameof cases)>]
let ``the canonical request of every suite case is the expected one`` (name: string) =
    let signed, _, expected = signCase name
    Assert.Equal(expected "header-canonical-request.txt", signed.CanonicalRequest)

[<Theory; MemberData(nameof cases)>]
let ``the string to sign of every suite case is the expected one`` (name: string) =
    let signed, _, expected = signCase name
    Assert.Equal(expected "header-string-to-sign.txt", signed.StringToSign)

[<Theory; MemberData(nameof cases)>]
let ``the signature of every suite case is the expected one`` (name: string) =
    let signed, _, expected = signCase name
    Assert.Equal(expected "header-signature.txt", signed.Signature)

[<Theory; MemberData(nameof cases)>]
let ``the signed request of every suite case is the expected one`` (name: string) =
    let _, signedRequest, expected = signCase name
    Assert.Equal(expected "header-signed-request.txt", signedRequest.TrimEnd('\n'))

[<Fact>]
let ``the suite has all 38 cases`` () =
    Assert.Equal(38, cases.Count)
