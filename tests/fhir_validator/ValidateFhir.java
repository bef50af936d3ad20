/*
 * Validates FHIR R4 JSON files with HAPI FHIR's instance validator, offline: the R4 base
 * profiles, value sets and code systems come from the hapi-fhir-validation-resources-r4
 * jar, and the common terminologies (MIME types, languages, countries) from HAPI's
 * built-in service, so nothing is fetched from a terminology server.
 *
 *     java -cp <jars>:<classes> ValidateFhir file.json ...
 *
 * prints one line per message: severity, file, location and text, separated by tabs,
 * then "DONE<tab>file" once a file is validated.
 */

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class ValidateFhir {
    public static void main(String[] files) throws Exception {
        FhirContext context = FhirContext.forR4();
        ValidationSupportChain support = new ValidationSupportChain(
            new DefaultProfileValidationSupport(context),
            new CommonCodeSystemsTerminologyService(context),
            new InMemoryTerminologyServerValidationSupport(context),
            new SnapshotGeneratingValidationSupport(context));
        FhirValidator validator = context.newValidator().registerValidatorModule(new FhirInstanceValidator(support));
        for (String file : files) {
            String resource = Files.readString(Path.of(file), StandardCharsets.UTF_8);
            for (SingleValidationMessage message : validator.validateWithResult(resource).getMessages()) {
                System.out.println(String.join("\t", message.getSeverity().name(), file,
                    oneLine(message.getLocationString()), oneLine(message.getMessage())));
            }
            System.out.println("DONE\t" + file);
        }
    }

    private static String oneLine(String text) {
        return text == null ? "" : text.replaceAll("[\\t\\r\\n]+", " ");
    }
}
