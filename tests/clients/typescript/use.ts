/*
 * `make test-clients`: the TypeScript types openapi-typescript writes from openapi.json
 * (./meditrack.ts, generated beside a copy of this file in the cache) must type what an
 * integrator writes: a create, a read and an upload. Compiled with tsc --strict --noEmit,
 * never run. Each @ts-expect-error line must stay an error: the types refuse what the
 * contract refuses (tsc fails on one that compiles).
 */
import type { components, paths } from "./meditrack";

type CreateBody = paths["/patients"]["post"]["requestBody"]["content"]["application/json"];
type Created = paths["/patients"]["post"]["responses"][201];
type ReadPath = paths["/patients/{patientId}"]["get"]["parameters"]["path"];
type Read = paths["/patients/{patientId}"]["get"]["responses"][200];
type Patient = Read["content"]["application/json"];
type Upload = paths["/patients/{patientId}/reports"]["post"]["requestBody"]["content"]["multipart/form-data"];
type Uploaded = paths["/patients/{patientId}/reports"]["post"]["responses"][201]["content"]["application/json"];
type Problem = components["schemas"]["Problem"];

// A create: what the contract requires, then every optional field.
export const minimal: CreateBody = { firstName: "Ada", lastName: "Lovelace", dateOfBirth: "1985-12-10" };
export const full: CreateBody = {
  ...minimal, gender: "female", email: "ada@example.org", phone: null, bloodType: "O-",
  address: { line: "12 St James's Square", city: "London", postalCode: "SW1Y 4JH", country: "GB" },
  allergies: ["penicillin"], notes: "Prefers morning appointments.",
};
// @ts-expect-error lastName is required
export const noLastName: CreateBody = { firstName: "Ada", dateOfBirth: "1985-12-10" };
// @ts-expect-error gender is one of male, female, other, unknown
export const badGender: CreateBody = { ...minimal, gender: "f" };
// @ts-expect-error no field the contract does not name
export const unknownField: CreateBody = { ...minimal, nickname: "Ada" };

async function problem(response: Response): Promise<Error> {
  const body = (await response.json()) as Problem;
  return new Error(`${body.status} ${body.title}: ${body.detail}`);
}

export async function create(base: string, token: string, body: CreateBody): Promise<[Patient, string]> {
  const response = await fetch(`${base}/patients`, {
    method: "POST", body: JSON.stringify(body),
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  if (response.status !== 201) throw await problem(response);
  const location: Created["headers"]["Location"] = response.headers.get("Location") ?? "";
  return [(await response.json()) as Created["content"]["application/json"], location];
}

// A read: the patient and its ETag, each field with the type the contract gives it.
export async function read(base: string, token: string, path: ReadPath): Promise<[Patient, Read["headers"]["ETag"]]> {
  const response = await fetch(`${base}/patients/${path.patientId}`, { headers: { Authorization: `Bearer ${token}` } });
  if (response.status !== 200) throw await problem(response);
  return [(await response.json()) as Patient, response.headers.get("ETag") ?? ""];
}

export function describe(patient: Patient): string {
  const version: number = patient.version;
  const phone: string | null = patient.phone;
  const city: string | undefined = patient.address?.city;
  const reports = patient.reports.map((report) => {
    const kind: "application/pdf" | "image/png" | "image/jpeg" = report.contentType;
    return `${report.filename} (${kind}, ${report.size} bytes)`;
  });
  return `${patient.firstName} ${patient.lastName} v${version}, ${phone ?? "no phone"}, ${city ?? "?"}: ${reports.join(", ")}`;
}

// An upload: openapi-typescript types a binary part (format: binary) as string; a browser
// sends a Blob, so the form is the body type with its file part as one.
type UploadForm = Omit<Upload, "file"> & { file: Blob };
// @ts-expect-error the file is required
export const noFile: Upload = { description: "Blood panel, November" };

export async function upload(base: string, token: string, path: ReadPath, fields: UploadForm,
                             filename: string): Promise<Uploaded> {
  const form = new FormData();
  form.append("file", fields.file, filename);
  if (fields.description !== undefined) form.append("description", fields.description);
  const response = await fetch(`${base}/patients/${path.patientId}/reports`, {
    method: "POST", body: form, headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status !== 201) throw await problem(response);
  const report = (await response.json()) as Uploaded;
  const sha256: string = report.sha256;
  return { ...report, sha256 };
}
