(*
    AWS Signature Version 4, header signing: pure functions from a request, credentials and a time to the canonical
    request, the string to sign, the signature and the headers to add. Checked against every case of the published
    test suite (tests/Kcl.Kinesis.Tests/sigv4-test-suite).
*)
namespace Kcl.Kinesis

open System
open System.Security.Cryptography
open System.Text

/// A request to sign: the path and query as they go on the request line, and its headers in order.
type internal SignableRequest =
    {
        Method: string
        /// The path, not yet URI-encoded (as on the request line).
        Path: string
        /// The query string without '?', or "".
        Query: string
        Headers: (string * string) list
        Body: byte[]
    }

/// How to sign: the scope, the time and the test suite's options.
type internal SigningContext =
    {
        Credentials: AwsCredentials
        Region: string
        Service: string
        Time: DateTime
        /// Remove dot segments and repeated slashes from the path (every service but S3).
        Normalize: bool
        /// Add an x-amz-content-sha256 header.
        SignBody: bool
        /// Send the session token, but leave it out of the signature (some services want that).
        OmitSessionToken: bool
    }

/// The signer's intermediate values and its result.
type internal Signed =
    {
        CanonicalRequest: string
        StringToSign: string
        Signature: string
        /// The headers to add to the request, in the order they are added; Authorization is last.
        AddedHeaders: (string * string) list
    }

[<RequireQualifiedAccess>]
module internal SigV4 =
    let hex (bytes: byte[]) = Convert.ToHexString(bytes).ToLowerInvariant()

    let sha256Hex (bytes: byte[]) = hex (SHA256.HashData bytes)

    let hmac (key: byte[]) (text: string) =
        HMACSHA256.HashData(key, Encoding.UTF8.GetBytes text)

    let private isUnreserved (c: char) =
        (c >= 'A' && c <= 'Z')
        || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9')
        || c = '-'
        || c = '_'
        || c = '.'
        || c = '~'

    /// RFC 3986 encoding of everything but the unreserved characters, upper-case hex, over UTF-8.
    let uriEncode (keepSlash: bool) (text: string) =
        let out = StringBuilder()

        for b in Encoding.UTF8.GetBytes text do
            let c = char b

            if b < 128uy && (isUnreserved c || (keepSlash && c = '/')) then
                out.Append c |> ignore
            else
                out.Append('%').Append(b.ToString "X2") |> ignore

        out.ToString()

    /// RFC 3986 §5.2.4 dot-segment removal, with empty segments dropped; a trailing slash stays.
    let normalizePath (path: string) =
        let segments = path.Split '/'
        let stack = Collections.Generic.List<string>()

        for s in segments do
            match s with
            | ""
            | "." -> ()
            | ".." ->
                if stack.Count > 0 then
                    stack.RemoveAt(stack.Count - 1)
            | s -> stack.Add s

        let trailing =
            stack.Count > 0
            && (path.EndsWith "/" || path.EndsWith "/." || path.EndsWith "/..")

        "/" + String.Join("/", stack) + (if trailing then "/" else "")

    let canonicalPath (normalize: bool) (path: string) =
        let path = if String.IsNullOrEmpty path then "/" else path
        let path = if normalize then normalizePath path else path
        uriEncode true path

    let canonicalQuery (query: string) =
        if String.IsNullOrEmpty query then
            ""
        else
            query.Split('&', StringSplitOptions.RemoveEmptyEntries)
            |> Array.map (fun pair ->
                let i = pair.IndexOf '='
                let key, value = if i < 0 then pair, "" else pair.Substring(0, i), pair.Substring(i + 1)
                let encode (s: string) = uriEncode false (Uri.UnescapeDataString s)
                encode key, encode value)
            |> Array.sortWith (fun (k1, v1) (k2, v2) ->
                match String.CompareOrdinal(k1, k2) with
                | 0 -> String.CompareOrdinal(v1, v2)
                | c -> c)
            |> Array.map (fun (k, v) -> k + "=" + v)
            |> String.concat "&"

    /// Trims a header value and turns every run of whitespace (folded lines included) into one space.
    let canonicalValue (value: string) =
        let parts =
            value.Split([| ' '; '\t'; '\r'; '\n' |], StringSplitOptions.RemoveEmptyEntries)

        String.Join(" ", parts)

    let amzDate (time: DateTime) =
        time.ToUniversalTime().ToString("yyyyMMdd'T'HHmmss'Z'", Globalization.CultureInfo.InvariantCulture)

    /// The signing key for a day, region and service.
    let signingKey (secret: string) (date: string) (region: string) (service: string) =
        let kDate = hmac (Encoding.UTF8.GetBytes("AWS4" + secret)) date
        let kRegion = hmac kDate region
        let kService = hmac kRegion service
        hmac kService "aws4_request"

    /// Signs the request: the headers it needs added (X-Amz-Security-Token, X-Amz-Date, x-amz-content-sha256 with
    /// SignBody, Authorization) and the values on the way.
    let sign (context: SigningContext) (request: SignableRequest) : Signed =
        let date = amzDate context.Time
        let day = date.Substring(0, 8)
        let payloadHash = sha256Hex request.Body
        let token = context.Credentials.SessionToken

        let added =
            [
                if not (isNull token) then
                    yield "X-Amz-Security-Token", token, not context.OmitSessionToken
                yield "X-Amz-Date", date, true
                if context.SignBody then
                    yield "x-amz-content-sha256", payloadHash, true
            ]

        let signedSet =
            (request.Headers |> List.map (fun (n, v) -> n, v))
            @ (added |> List.filter (fun (_, _, s) -> s) |> List.map (fun (n, v, _) -> n, v))

        let canonicalHeaders =
            signedSet
            |> List.groupBy (fun (n, _) -> n.ToLowerInvariant())
            |> List.map (fun (n, values) -> n, values |> List.map (snd >> canonicalValue) |> String.concat ",")
            |> List.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))

        let signedHeaders = canonicalHeaders |> List.map fst |> String.concat ";"

        let canonicalRequest =
            String.concat
                "\n"
                [
                    request.Method
                    canonicalPath context.Normalize request.Path
                    canonicalQuery request.Query
                    (canonicalHeaders |> List.map (fun (n, v) -> n + ":" + v + "\n") |> String.concat "")
                    signedHeaders
                    payloadHash
                ]

        let scope = sprintf "%s/%s/%s/aws4_request" day context.Region context.Service

        let stringToSign =
            String.concat
                "\n"
                [
                    "AWS4-HMAC-SHA256"
                    date
                    scope
                    sha256Hex (Encoding.UTF8.GetBytes canonicalRequest)
                ]

        let signature =
            hex (hmac (signingKey context.Credentials.SecretAccessKey day context.Region context.Service) stringToSign)

        let authorization =
            sprintf
                "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                context.Credentials.AccessKeyId
                scope
                signedHeaders
                signature

        {
            CanonicalRequest = canonicalRequest
            StringToSign = stringToSign
            Signature = signature
            AddedHeaders = (added |> List.map (fun (n, v, _) -> n, v)) @ [ "Authorization", authorization ]
        }
